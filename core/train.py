"""`python -m core.train [--config cfg.yaml] [--set key=value ...]`: one training run without Ray."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from core.config import TrainConfig, parse_set
from core.errors import UserError

EXAMPLES = """examples:
  python -m core.train                                   # demo data, CPU-sized model
  python -m core.train --set epochs=3 --set lr=1e-3
  python -m core.train --config results/finetune/best/config.yaml
  python -m core.train --set csv=Data/train.csv --set init_checkpoint=base.pt --set lr=3e-5
"""


def resolve_config(config_path: str | None, sets: list[str], demo_size: str = "default",
                   verbose: bool = True) -> TrainConfig:
    """YAML file, then --set overrides. An empty csv means the demo data with its CPU-sized
    model; values the user wrote in the file or on the command line still win."""
    given: dict[str, Any] = load_yaml(config_path) if config_path else {}
    given.update(parse_set(sets))
    if not given.get("csv"):
        from core import demo

        demo.ensure_demo(demo_size, verbose=verbose)
        given = {**demo.demo_overrides(demo_size), **{k: v for k, v in given.items() if k != "csv"},
                 "csv": demo.demo_overrides(demo_size)["csv"]}
    return TrainConfig.from_dict(given)


def load_yaml(path: str) -> dict[str, Any]:
    """The keys a config file sets (checked against TrainConfig), without filling in defaults."""
    raw = TrainConfig.read(path)
    cfg = TrainConfig.from_dict(raw)
    return {k: getattr(cfg, k) for k in raw}


def _write_model_files(cfg: TrainConfig, out_dir: str) -> None:
    """classes.txt (and spectrogram.yaml for data made by core.prepare) beside best.pt, so that
    `python -m core.predict --model <out_dir>` works on a plain training run too."""
    from core import bundle
    from core.data import dataset_labels, read_table

    bundle.write_extras(out_dir, *dataset_labels(*read_table(cfg.csv, cfg.num_classes), cfg.csv))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.train", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TrainConfig YAML (e.g. an exported best/config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one field")
    p.add_argument("--resume", metavar="DIR", help="continue the run whose last.pt is in DIR")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        cfg = resolve_config(args.config, args.set, verbose=not args.quiet)
        from core.engine import fit

        print(f"birdtune: training {cfg.model_name} on {cfg.csv} (fold {cfg.fold}, {cfg.epochs} epochs) -> {cfg.out_dir}")

        def report(m: dict, _ckpt) -> None:
            if m.get("status") == "diverged":
                print(f"epoch {m['epoch']}: training loss is not finite; run stopped (diverged)")
            else:
                print(f"epoch {m['epoch']:>3}  train_loss {m['train_loss']:.4f}  val_loss {m['val_loss']:.4f}  "
                      f"cmap {m['cmap']:.4f}  cmap_present {m['cmap_present']:.4f}  acc {m['accuracy']:.4f}  "
                      f"{m['images_per_s']:.0f} img/s", flush=True)

        summary = fit(cfg, report, resume_from=args.resume, progress=not args.quiet)
        _write_model_files(cfg, summary["out_dir"])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: status {summary['status']}, best cmap {summary['best_cmap']:.4f} at epoch "
          f"{summary['best_epoch']}; files in {summary['out_dir']}")
    return 0 if summary["status"] == "ok" else 1


if __name__ == "__main__":
    from core.process import finish

    finish(main())
