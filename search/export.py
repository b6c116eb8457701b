"""`python -m search.export results/<name>`: an experiment's outcome (trials, curves, importances, re-validation,
the chosen trial) computed once, then written once: tables, best/ (core.bundle's model folder), report."""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from core import bundle, checkpoint
from core.data import dataset_labels, read_table
from core.errors import UserError
from search import importance, journal, layout, report, revalidate, storage, tables
from search.budget import Spent
from search.spec import SearchSpec
from search.spec import read as read_search
from search.tables import Best, Outcome


class ExportError(UserError):
    """Not an experiment; one line, exit code 2."""


def read_spec(exp: str) -> SearchSpec:
    spec = read_search(exp)
    if spec is None:
        raise ExportError(f"{exp} is not a birdtune experiment (no {layout.META_FILE})")
    return spec


def cut_trials(exp: str) -> frozenset[str]:
    return frozenset((storage.read_text(storage.join(exp, layout.CUT)) or "").split())


def trials(exp: str, spec: SearchSpec) -> tuple[pd.DataFrame, Any]:
    """The trials table and the ExperimentAnalysis it came from (None before any trial started)."""
    found = tables.analysis(exp, spec.metric, spec.mode)
    return tables.trial_table(found, spec.searched, spec.metric, spec.max_t, cut_trials(exp)), found


def outcome(exp: str, spec: SearchSpec | None = None, search: tuple[pd.DataFrame, Any] | None = None) -> Outcome:
    """Everything export writes, computed once; `search` passes a trials table already read."""
    spec = spec or read_spec(exp)
    table, found = search or trials(exp, spec)
    curves = tables.curve_table(found, table, spec.metric)
    imp = importance.importances(table, curves, spec.space, spec.searched, spec.max_t, spec.grace_period)
    sub = tables.analysis(storage.join(exp, layout.REVALIDATE_DIR), spec.metric, spec.mode) \
        if storage.exists(storage.join(exp, layout.REVALIDATE_DIR, "tuner.pkl")) else None
    runs = tables.revalidation_table(sub, spec.metric, spec.max_t)
    rank = revalidate.ranking(runs, spec.revalidate_folds) if runs is not None else None
    trust = importance.rung_trust(table, curves, spec.rungs, spec.max_t)
    events = journal.read(storage.join(exp, layout.RESULTS_LOG))
    return Outcome(exp, spec, table, curves, imp, runs, rank, _choose(spec, table, found, runs, rank, sub),
                   cut_trials(exp), trust, spent=Spent.from_journal(events),
                   budget_ended=bool(spec.budget) and any(e["event"] == journal.SPENT for e in events),
                   continued=journal.continued(events))


def _choose(spec: SearchSpec, table: pd.DataFrame, found, runs, rank, sub) -> Best | None:
    """The best trial of the search, or the re-validation's winner when one candidate finished every fold."""
    ok = tables.usable(table)
    if ok.empty:
        return None
    best = _trial_best(ok.loc[ok["best_cmap"].idxmax()], found, spec)
    if rank is None or not rank["mean_cmap"].notna().any():
        return best
    chosen = rank.iloc[0]
    row = table[table["trial_id"] == chosen["trial_id"]].iloc[0]
    first = runs[(runs["trial_id"] == chosen["trial_id"]) & (runs["status"] == layout.COMPLETED)].iloc[0]
    header = {"trial_index": int(row["trial_index"]), "trial_id": chosen["trial_id"],
              "search_best_cmap": float(row["best_cmap"]),
              "chosen_by": f"mean best-epoch cmap over folds {spec.revalidate_folds} "
                           f"(top {spec.revalidate_top} re-validated at {spec.max_t} epochs)",
              "revalidation_mean_cmap": float(chosen["mean_cmap"]),
              "revalidation_cmap_per_fold": {int(f): float(v) for f, v in chosen["per_fold"].items()},
              "model": f"trained with fold {int(first['fold'])} as validation (run {first['run_id']})"}
    ckpt = sub.get_last_checkpoint(next(t for t in sub.trials if t.trial_id == first["run_id"]))
    return Best(chosen["trial_id"], int(row["trial_index"]), {k: tables.py(row[k]) for k in spec.searched},
                header, ckpt)


# --- writing --------------------------------------------------------------------------------------
def write(out: Outcome) -> None:
    """Every file of the outcome: the tables, best/ and the report."""
    exp, spec = out.exp, out.spec
    buf = io.BytesIO()
    out.table.to_parquet(buf, index=False)
    storage.write_bytes(storage.join(exp, layout.TRIALS[0]), buf.getvalue())
    for name, df in ((layout.TRIALS[1], out.table), (layout.CURVES, out.curves), (layout.IMPORTANCE, out.importance)):
        storage.write_text(storage.join(exp, name), df.to_csv(index=False))
    if out.revalidation is not None:
        storage.write_text(storage.join(exp, layout.REVALIDATION), out.revalidation.to_csv(index=False))
    if out.best is not None:
        _write_bundle(exp, layout.BEST_DIR, out.best, out.best_config(), bundle.extras(*_dataset(spec)))
    for name, data in report.render(out).items():
        storage.write_bytes(storage.join(exp, name), data)


def _write_bundle(exp: str, folder: str, best: Best, config: dict[str, Any], extras: dict[str, bytes]) -> None:
    """A model folder core.predict reads: config.yaml (with its header), model.pt, classes and spectrogram."""
    storage.write_text(storage.join(exp, folder, bundle.CONFIG),
                       best.header_text() + yaml.safe_dump(config, sort_keys=False))
    if best.checkpoint is not None:
        _write_model(exp, best.checkpoint, folder)
    for name, data in extras.items():  # what predict needs besides the weights (core.bundle.extras)
        storage.write_bytes(storage.join(exp, folder, name), data)


def _trial_best(row, found, spec: SearchSpec, **header) -> Best:
    """A trials-table row as a Best: its searched values and the last checkpoint (holding its best-epoch
    weights); `header` adds to what config.yaml's header says of it."""
    trial = next(t for t in found.trials if t.trial_id == row["trial_id"])
    head = {"trial_index": int(row["trial_index"]), "trial_id": row["trial_id"], "best_cmap": float(row["best_cmap"]),
            "best_epoch": int(row["best_epoch"]), "status": row["status"], **header}
    return Best(row["trial_id"], int(row["trial_index"]), {k: trial.config[k] for k in spec.searched if k in trial.config},
                head, found.get_last_checkpoint(trial))


def top_trials(out: Outcome, found, k: int) -> list[Best]:
    """The k trials with the highest best-epoch cmAP (completed or stopped early), best first."""
    ranked = tables.usable(out.table).sort_values("best_cmap", ascending=False, kind="stable").head(k)
    return [_trial_best(row, found, out.spec, rank=i) for i, (_, row) in enumerate(ranked.iterrows(), 1)]


def write_top(out: Outcome, k: int, found=None) -> list[str]:
    """best-1 ... best-k: the k best trials' model folders, for an ensemble (core.predict --model A --model B)."""
    found = found if found is not None else tables.analysis(out.exp, out.spec.metric, out.spec.mode)
    extras = bundle.extras(*_dataset(out.spec))
    folders = []
    for i, best in enumerate(top_trials(out, found, k), 1):
        folder = f"{layout.BEST_DIR}-{i}"
        _write_bundle(out.exp, folder, best, out.config_for(best, folder), extras)
        folders.append(storage.join(out.exp, folder))
    return folders


def _dataset(spec: SearchSpec) -> tuple[list[str], dict[str, Any] | None]:
    """Class names and spectrogram settings, from search.yaml (or, for older experiments, the CSV)."""
    if spec.classes:
        return spec.classes, spec.spectrogram
    csv = spec.base["csv"]
    return dataset_labels(*read_table(csv, spec.base.get("num_classes", 0)), csv)


def _write_model(exp: str, ckpt, folder: str = layout.BEST_DIR) -> None:
    """folder/model.pt: the best-epoch weights of a trial's checkpoint, without optimizer state."""
    with tempfile.TemporaryDirectory() as tmp:
        local = ckpt.to_directory(tmp)
        best_pt = Path(local) / "best.pt"
        if best_pt.is_file():
            state = checkpoint.load(best_pt)
            keep = {k: state[k] for k in ("model", "epoch", "metrics", "config", "num_classes") if k in state}
            path = Path(tmp) / bundle.MODEL
            checkpoint.save(path, keep)
            storage.write_bytes(storage.join(exp, folder, bundle.MODEL), path.read_bytes())


def export(exp: str, search: tuple[pd.DataFrame, Any] | None = None) -> Outcome:
    """Compute the outcome of experiment folder or URI `exp` and write its files."""
    out = outcome(exp, search=search)
    write(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.export", description=__doc__)
    p.add_argument("experiment", help="experiment folder or URI, e.g. results/finetune-20261125-1500")
    p.add_argument("--top", type=int, default=0, metavar="K",
                   help="also write best-1 ... best-K: the K best trials' model folders, for an ensemble")
    args = p.parse_args(argv)
    if args.top < 0:
        print("error: --top must be >= 1 (or 0: best/ only)", file=sys.stderr)
        return 2
    exp = storage.normalize(args.experiment)
    try:
        search = trials(exp, read_spec(exp))
        out = export(exp, search)
        folders = write_top(out, args.top, search[1]) if args.top and out.best is not None else []
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out.best is None:
        print(f"no trial has a result yet; wrote {storage.join(exp, layout.TRIALS[1])}")
    print(tables.format_table(out.table, out.spec.searched))
    print(f"wrote trials.parquet/csv, curves.csv, importance.csv, best/ and report.html (with its PNGs) under {exp}")
    if args.top:
        models = " ".join(f"--model {f}" for f in folders)
        print(f"wrote {len(folders)} model folder(s) for an ensemble" + (
            f" (only {len(folders)} trial(s) have results)" if len(folders) < args.top else "") +
            f": python -m core.predict {models} --audio test_soundscapes/ --out submission.csv")
    return 0


if __name__ == "__main__":
    from core.process import finish

    finish(main())
