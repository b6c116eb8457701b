"""report.html (one self-contained file, opens offline) and its PNGs from an experiment's Outcome: learning
curves with ASHA's rungs, parameters vs cmAP, importances, the best config vs the space's starting point, cost."""
from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

import spaces  # noqa: E402
from core.config import TrainConfig  # noqa: E402
from search import layout, storage  # noqa: E402
from search.tables import Outcome  # noqa: E402

HIGHLIGHT = 5  # the best trials drawn on top of the others, in their own colours
BEST = ["#212529", "#7048e8", "#ae3ec9", "#0c8599", "#5c940d"]
COLORS = {layout.COMPLETED: "#2b8a3e", layout.STOPPED_EARLY: "#e8590c", layout.DIVERGED: "#c92a2a",
          layout.ERRORED: "#868e96", layout.UNFINISHED: "#1c7ed6"}
PLOTS = layout.PLOTS


def reference(space: spaces.Space) -> tuple[str, dict[str, Any]]:
    """What the best config is compared with: the space's first (warm-start) trial on TrainConfig's
    defaults, named as the space names it (the finetune space's is the notebook's own values)."""
    return space.reference, {**TrainConfig().to_dict(), **(space.points[0] if space.points else {})}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def highlighted(table: pd.DataFrame, k: int = HIGHLIGHT) -> list[str]:
    """The trial ids of the k best trials by best cmAP (diverged and errored ones never count)."""
    ok = table[table["status"].isin([layout.COMPLETED, layout.STOPPED_EARLY])] if "status" in table else table
    return ok.nlargest(k, "best_cmap")["trial_id"].tolist() if "best_cmap" in ok and not ok.empty else []


def _faint(n: int) -> float:
    """How opaque one of n curves or points is: solid for a few dozen, faint for hundreds, still visible at 10,000."""
    return max(0.06, min(0.85, 25 / max(n, 1)))


def curves_plot(table: pd.DataFrame, curves: pd.DataFrame, max_t: int, rung_epochs: list[int]) -> bytes:
    """Every trial's curve coloured by status (faint when there are many), the best few drawn on top, named."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    status = dict(zip(table["trial_id"], table["status"]))
    index = dict(zip(table["trial_id"], table.get("trial_index", table.index)))
    best = highlighted(table)
    n = curves["trial_id"].nunique()
    alpha, lw, ms = _faint(n), (1.2 if n <= 50 else 0.7), (3 if n <= 50 else 1.5)  # (a one-epoch trial is a dot)
    seen: set[str] = set()
    for trial_id, g in curves.groupby("trial_id", sort=False):
        if trial_id in best:
            continue
        s = status.get(trial_id, layout.UNFINISHED)
        ax.plot(g["epoch"], g[spaces.METRIC], marker="o", ms=ms, lw=lw, alpha=alpha, color=COLORS[s],
                label=s.replace("_", " ") if s not in seen else None)
        seen.add(s)
    by_id = dict(tuple(curves.groupby("trial_id", sort=False)))
    for rank, trial_id in enumerate(best):
        if trial_id in by_id:
            g = by_id[trial_id]
            ax.plot(g["epoch"], g[spaces.METRIC], marker="o", ms=4, lw=2.2 if rank == 0 else 1.6, color=BEST[rank],
                    label=f"trial {index.get(trial_id, '?')} ({g[spaces.METRIC].max():.4f})", zorder=3)
    for i, r in enumerate(rung_epochs):
        ax.axvline(r, color="#495057", ls="--", lw=0.8, label="ASHA rung" if i == 0 else None)
    title = f"learning curves of {len(table)} trials" + (f", the best {len(best)} on top" if n > len(best) else "")
    ax.set(xlabel="epoch", ylabel=spaces.METRIC, title=title, xlim=(0.5, max_t + 0.5))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        legend = ax.legend(loc="lower right", fontsize=8)
        for h in legend.legend_handles:
            h.set_alpha(1)
    return _png(fig)


def params_plot(table: pd.DataFrame, space: spaces.Space, searched: list[str]) -> bytes:
    dists = space.distributions()
    names = [n for n in searched if n in table]
    cols = min(3, len(names)) or 1
    rows = math.ceil(len(names) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    best = highlighted(table)
    for ax, name in zip(axes.flat, names):
        for s, g in table.groupby("status"):
            ax.scatter(g[name], g["best_cmap"], s=22 if len(table) <= 50 else 8, alpha=max(0.15, _faint(len(table))),
                       color=COLORS.get(s, "#000"), label=s.replace("_", " "), linewidths=0)
        top = table[table["trial_id"].isin(best)] if "trial_id" in table else table.iloc[:0]
        if len(table) > len(top) > 0:
            ax.scatter(top[name], top["best_cmap"], s=60, marker="*", color="#f59f00", edgecolors="black",
                       linewidths=0.6, zorder=3, label=f"best {len(top)}")
        if dists.get(name, {}).get("log"):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap
        ax.set(xlabel=name, ylabel=f"best {spaces.METRIC}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if names and not table.empty:
        for h in axes.flat[0].legend(fontsize=7).legend_handles:
            h.set_alpha(1)
    fig.suptitle("each searched parameter against the trial's best cmAP")
    fig.tight_layout()
    return _png(fig)


def _trials_seen(g: pd.DataFrame) -> str:
    """'N trials', or 'N trials; fANOVA on M drawn at random' where importance.MAX_POINTS cut them."""
    n, how = int(g["trials"].iloc[0]), str(g["evaluator"].iloc[0]) if "evaluator" in g else "fANOVA"
    return f"{n} trials" + ("" if how == "fANOVA" else f"; {how}")


def importance_plot(imp: pd.DataFrame) -> bytes:
    targets = list(dict.fromkeys(imp["target"])) if not imp.empty else []
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(5 * max(1, len(targets)), 3.2), squeeze=False)
    if not targets:
        axes[0, 0].text(0.5, 0.5, "too few finished trials for importances", ha="center", va="center")
        axes[0, 0].axis("off")
    for ax, target in zip(axes[0], targets):
        g = imp[imp["target"] == target].sort_values("importance")
        ax.barh(g["param"], g["importance"], color="#1c7ed6")
        ax.set(xlabel="fANOVA importance", title=f"{target}\n({_trials_seen(g)})", xlim=(0, 1))
        ax.title.set_fontsize(8)
    fig.tight_layout()
    return _png(fig)


def cost(table: pd.DataFrame, max_t: int, cpus_per_trial: float, gpus_per_trial: float) -> dict[str, Any]:
    """Trial-epochs and device hours spent, and what every trial at full length would have cost."""
    unit, per = ("GPU", float(gpus_per_trial)) if gpus_per_trial else ("CPU", float(cpus_per_trial or 1))
    epochs = int(table["epochs"].sum()) if not table.empty else 0
    hours = float(table["wall_s"].sum()) * per / 3600 if not table.empty else 0.0
    full = len(table) * int(max_t)
    per_epoch_h = hours / epochs if epochs else 0.0
    return dict(unit=unit, trials=len(table), trial_epochs=epochs, hours=hours, full_epochs=full,
                full_hours=per_epoch_h * full, saved=1 - epochs / full if full else 0.0)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _trust_html(rows: list[dict]) -> str:
    if not rows:
        return "<p>no early stopping in this search (no ASHA rungs, or no results yet)</p>"
    return ("<p>Kendall's tau between each trial's best score up to a rung and its final best score, over the "
            "trials that went on past that rung:</p><ul>"
            + "".join(f"<li>{html.escape(r['advice'])}</li>" for r in rows) + "</ul>")


def render(out: Outcome) -> dict[str, bytes]:
    """{file name: bytes} of report.html and the PNGs it embeds, from the outcome alone."""
    spec, table = out.spec, out.table
    space = spaces.get(spec.space)
    rung_epochs = spec.rungs
    pngs = {"curves.png": curves_plot(table, out.curves, spec.max_t, rung_epochs),
            "params.png": params_plot(table, space, spec.searched), "importance.png": importance_plot(out.importance)}
    c = cost(table, spec.max_t, spec.cpus_per_trial, spec.gpus_per_trial)
    best_rows, header, columns = [], {}, ["parameter", "best", "searched"]
    if out.best is not None:
        header, chosen = out.best.header, out.best_config()
        name, ref = reference(space)
        keys = list(spec.searched) + [k for k in ("epochs", "batch_size", "model_name", "img_size", "loss",
                                                  "mixup_p", "lr_schedule") if k not in spec.searched]
        best_rows = [dict(parameter=k, best=chosen.get(k), **({name: ref.get(k)} if name else {}),
                          searched="yes" if k in spec.searched else "") for k in keys]
        if name:
            columns.insert(2, name)
    img = "".join(f'<figure><img alt="{n}" src="data:image/png;base64,{base64.b64encode(b).decode()}"></figure>'
                  for n, b in pngs.items())
    top = table.sort_values("best_cmap", ascending=False).head(10)[
        ["trial_index", "status", "epochs", "best_cmap", *spec.searched, "wall_s"]] if not table.empty else table
    counts = out.counts
    parts = [
        f"<h1>birdtune report: {html.escape(storage.basename(out.exp))}</h1>",
        f"<p>space <b>{html.escape(spec.space)}</b>, searcher {html.escape(spec.searcher)}, "
        f"scheduler {html.escape(spec.scheduler)}, {len(table)} trials of up to {spec.max_t} "
        f"epochs ({', '.join(f'{v} {k.replace(chr(95), chr(32))}' for k, v in counts.items())})"
        f"{html.escape(out.continued_text)}; "
        f"written {datetime.now():%Y-%m-%d %H:%M}</p>",
        "<h2>Best config</h2>",
        (f"<p>trial {header.get('trial_index', '')} (Ray trial {html.escape(str(header.get('trial_id', '')))}): "
         f"best {spec.metric} {header.get('best_cmap', header.get('search_best_cmap', float('nan'))):.4f}"
         + (f"; re-validated mean {header['revalidation_mean_cmap']:.4f} over folds "
            f"{', '.join(str(k) for k in header.get('revalidation_cmap_per_fold', {}))}"
            if "revalidation_mean_cmap" in header else "") + "</p>"
         + _table_html(pd.DataFrame(best_rows, columns=columns)))
        if best_rows else "<p>no trial has a result yet</p>",
        "<h2>Cost</h2>",
        f"<p>{c['trial_epochs']} trial-epochs and {c['hours']:.2f} {c['unit']} hours; every trial at full length "
        f"(a grid of the same {c['trials']} configs) would have cost {c['full_epochs']} trial-epochs and about "
        f"{c['full_hours']:.2f} {c['unit']} hours: {100 * c['saved']:.0f}% saved by early stopping."
        + (f" Budget: {html.escape(spec.budget.describe())}; spent {html.escape(out.spent.describe(spec.budget))}"
           + (" (the budget ended the search)." if out.budget_ended else ".") if spec.budget and out.spent else "")
        + "</p>",
        "<h2>Could early stopping be trusted?</h2>", _trust_html(out.trust),
        "<h2>Plots</h2>", img,
        "<h2>Top trials</h2>", _table_html(top),
    ]
    if out.revalidation is not None and not out.revalidation.empty:
        parts += ["<h2>Re-validation</h2>", _table_html(out.revalidation.drop(columns=["run_id"], errors="ignore"))]
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#212529}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #dee2e6;padding:3px 8px}"
             "th{background:#f1f3f5}img{max-width:100%}figure{margin:1em 0}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>birdtune report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return {layout.REPORT: page.encode(), **pngs}
