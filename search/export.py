"""`python -m search.export results/<name>`: trials.parquet/csv and best/{config.yaml,model.pt} from an experiment."""
from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from core import bundle
from search import storage

META_FILE = "search.yaml"  # written by search.run before the first trial: space, base config, max_t
DB_FILE = "optuna.db"  # the Optuna study of a tpe search
STATUSES = ("completed", "stopped_early", "errored", "diverged", "unfinished")


class ExportError(ValueError):
    pass


def read_meta(exp: str) -> dict[str, Any]:
    text = storage.read_text(storage.join(exp, META_FILE))
    if text is None:
        raise ExportError(f"{exp} is not a birdtune experiment (no {META_FILE})")
    return yaml.safe_load(text)


def trial_table(exp: str, meta: dict[str, Any] | None = None):
    """One row per trial (in launch order) and the ExperimentAnalysis it came from."""
    from ray.tune import ExperimentAnalysis

    meta = meta or read_meta(exp)
    metric, max_t = meta["metric"], meta["max_t"]
    try:
        analysis = ExperimentAnalysis(exp, default_metric=metric, default_mode=meta["mode"])
    except ValueError:
        return pd.DataFrame(columns=["trial_id", "trial_index", "status"]), None  # no trial started yet
    rows = []
    for trial in analysis.trials:
        df = analysis.trial_dataframes.get(trial.trial_id, pd.DataFrame())
        # Ray's experiment tag starts with the trial's creation counter: '3_lr=...' (1-based under a
        # Searcher, 0-based under the random search); its rank is the launch order
        tag = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]
        row: dict[str, Any] = {"trial_id": trial.trial_id, "trial_index": int(tag) if tag.isdigit() else 10**9 + len(rows)}
        row.update({k: trial.config.get(k) for k in meta["searched"]})
        row.update(trial_outcome(trial, df, metric, max_t))
        has = row["epochs"] > 0
        row.update(last_cmap=float(df[metric].iloc[-1]) if has else float("nan"),
                   best_epoch=int(df.loc[df[metric].idxmax(), "epoch"]) if has else 0,
                   wall_s=float(df["time_total_s"].iloc[-1]) if has else 0.0)
        row["error"] = _error_text(trial) if row["status"] == "errored" else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values("trial_index").reset_index(drop=True)
        table["trial_index"] = range(len(table))
    return table, analysis


def trial_outcome(trial, df: pd.DataFrame, metric: str, max_t: int) -> dict[str, Any]:
    """best_cmap, epochs and status of one trial from its result rows (search and re-validation alike)."""
    has = not df.empty and metric in df
    epochs = int(df["epoch"].max()) if has else 0
    diverged = has and (df.get("status") == "diverged").any()
    return dict(best_cmap=float(df[metric].max()) if has else float("nan"), epochs=epochs,
                status=trial_status(trial.status, epochs, max_t, bool(diverged)))


def trial_status(ray_status: str, epochs: int, max_t: int, diverged: bool) -> str:
    """One of STATUSES from Ray's trial status and what the trial reported."""
    if ray_status == "ERROR":
        return "errored"
    if diverged:
        return "diverged"
    if ray_status == "TERMINATED":
        return "completed" if epochs >= max_t else "stopped_early"
    return "unfinished"


def _error_text(trial) -> str:
    """The last line of the trial's recorded traceback (the exception and its message)."""
    try:
        text = trial.get_error() or ""
    except Exception:  # the error file lives on a node or URI we cannot read
        text = ""
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "error (no message recorded)"


def curve_table(analysis, table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every trial's reported epochs: trial_index, trial_id, epoch, the metric, train/val loss, time."""
    cols = ["trial_index", "trial_id", "epoch", metric, "train_loss", "val_loss", "time_total_s"]
    if analysis is None or table.empty:
        return pd.DataFrame(columns=cols)
    index = dict(zip(table["trial_id"], table["trial_index"]))
    parts = []
    for trial_id, df in analysis.trial_dataframes.items():
        if df.empty or metric not in df or trial_id not in index:
            continue
        part = df.reindex(columns=cols[2:]).copy()
        part.insert(0, "trial_id", trial_id)
        part.insert(0, "trial_index", index[trial_id])
        # a trial restarted from a checkpoint reports its later epochs again: keep the last report of each
        parts.append(part.drop_duplicates("epoch", keep="last"))
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts).sort_values(["trial_index", "epoch"]).reset_index(drop=True)


def _write_table(exp: str, name: str, df: pd.DataFrame) -> None:
    storage.write_text(storage.join(exp, name), df.to_csv(index=False))


def export(exp: str, quiet: bool = False) -> pd.DataFrame:
    """Write trials.parquet/csv, curves.csv, importance.csv, revalidation.csv (if re-validated), best/ and
    report.html with its PNGs for experiment folder or URI `exp`. Returns the trials table."""
    from search import importance

    meta = read_meta(exp)
    table, analysis = trial_table(exp, meta)
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    storage.write_bytes(storage.join(exp, "trials.parquet"), buf.getvalue())
    _write_table(exp, "trials.csv", table)
    curves = curve_table(analysis, table, meta["metric"])
    _write_table(exp, "curves.csv", curves)
    imp = importance.importances(table, curves, meta)
    _write_table(exp, "importance.csv", imp)
    study = meta.get("study")
    if study and os.path.isfile(study) and storage.is_uri(exp):  # SQLite lived locally; keep a copy with the trials
        storage.write_bytes(storage.join(exp, os.path.basename(study)), Path(study).read_bytes())
    runs = _write_best(exp, meta, table, analysis, quiet)
    from search import report

    report.write(exp, meta, table, curves, imp, runs)
    return table


def _write_best(exp: str, meta: dict[str, Any], table: pd.DataFrame, analysis, quiet: bool):
    """best/config.yaml and best/model.pt (and revalidation.csv); returns the re-validation runs or None."""
    from search import revalidate

    ok = table[table["status"].isin(revalidate.OK)] if not table.empty else table
    ok = ok[ok["best_cmap"].notna()] if not ok.empty else ok
    if ok.empty:
        if not quiet:
            print(f"no trial has a result yet; wrote {storage.join(exp, 'trials.csv')}")
        return None
    best = ok.loc[ok["best_cmap"].idxmax()]
    best_meta = {"trial_id": best["trial_id"], "best_cmap": float(best["best_cmap"]),
                 "best_epoch": int(best["best_epoch"]), "status": best["status"]}
    trial = next(t for t in analysis.trials if t.trial_id == best["trial_id"])
    params, ckpt = {k: trial.config[k] for k in meta["searched"] if k in trial.config}, analysis.get_last_checkpoint(trial)
    runs, sub = revalidate.table(exp, meta)
    if runs is not None:
        _write_table(exp, "revalidation.csv", runs)
        rank = revalidate.ranking(runs, meta["revalidate_folds"])
        if rank["mean_cmap"].notna().any():  # at least one candidate finished every fold
            chosen = rank.iloc[0]
            row = table[table["trial_id"] == chosen["trial_id"]].iloc[0]
            params = {k: revalidate._py(row[k]) for k in meta["searched"]}
            best_meta = {"trial_id": chosen["trial_id"], "search_best_cmap": float(row["best_cmap"]),
                         "chosen_by": f"mean best-epoch cmap over folds {meta['revalidate_folds']} "
                                      f"(top {meta['revalidate_top']} re-validated at {meta['max_t']} epochs)",
                         "revalidation_mean_cmap": float(chosen["mean_cmap"]),
                         "revalidation_cmap_per_fold": {int(f): float(v) for f, v in chosen["per_fold"].items()}}
            first = runs[(runs["trial_id"] == chosen["trial_id"]) & (runs["status"] == "completed")].iloc[0]
            ckpt = sub.get_last_checkpoint(next(t for t in sub.trials if t.trial_id == first["run_id"]))
            best_meta["model"] = f"trained with fold {int(first['fold'])} as validation (run {first['run_id']})"
    cfg = {**meta["base"], **params}
    cfg["out_dir"] = str(Path("results") / f"retrain-{best_meta['trial_id']}") if "://" in exp else \
        os.path.join(exp, "best", "retrain")
    header = "".join(f"# {line}\n" for line in yaml.safe_dump(best_meta, sort_keys=False).splitlines())
    storage.write_text(storage.join(exp, "best", "config.yaml"), header + yaml.safe_dump(cfg, sort_keys=False))
    if ckpt is not None:
        _write_model(exp, ckpt)
    for name, data in bundle.extras(*_dataset(meta)).items():  # what predict needs besides the weights
        storage.write_bytes(storage.join(exp, "best", name), data)
    return runs


def _dataset(meta: dict[str, Any]) -> tuple[list[str], dict[str, Any] | None]:
    """Class names and spectrogram settings, from search.yaml (or, for older experiments, the CSV)."""
    if "classes" in meta:
        return meta["classes"], meta.get("spectrogram")
    from core.data import class_names, dataset_info, read_table

    table, n = read_table(meta["base"]["csv"], meta["base"].get("num_classes", 0))
    return class_names(table, n, meta["base"]["csv"]), dataset_info(meta["base"]["csv"])[1]


def _write_model(exp: str, ckpt) -> None:
    """best/model.pt: the best-epoch weights of a trial's checkpoint, without optimizer state."""
    with tempfile.TemporaryDirectory() as tmp:
        local = ckpt.to_directory(tmp)
        best_pt = Path(local) / "best.pt"
        if best_pt.is_file():
            from core import checkpoint

            state = checkpoint.load(best_pt)
            keep = {k: state[k] for k in ("model", "epoch", "metrics", "config", "num_classes") if k in state}
            out = Path(tmp) / "model.pt"
            checkpoint.save(out, keep)
            storage.write_bytes(storage.join(exp, "best", "model.pt"), out.read_bytes())


def format_table(table: pd.DataFrame, searched: list[str], limit: int = 40) -> str:
    if table.empty:
        return "(no trials)"
    cols = ["trial_index", "status", "epochs", "best_cmap"] + searched + ["wall_s"]
    shown = table.sort_values("best_cmap", ascending=False, na_position="last").head(limit)[cols]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.export", description=__doc__)
    p.add_argument("experiment", help="experiment folder or URI, e.g. results/finetune-20261125-1500")
    args = p.parse_args(argv)
    exp = storage.normalize(args.experiment)
    try:
        meta = read_meta(exp)
        table = export(exp)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(table, meta["searched"]))
    print(f"wrote trials.parquet/csv, curves.csv, importance.csv, best/ and report.html (with its PNGs) under {exp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
