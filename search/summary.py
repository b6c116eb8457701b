"""What the driver prints when a search ends: the trials table, errored trials' reasons, counts, epochs and
time, the budget spent, the best trial and where its files are, the early-stopping advice, the report."""
from __future__ import annotations

from search import layout, revalidate, storage
from search.tables import Outcome, format_table


def print_summary(out: Outcome, seconds: float) -> None:
    """The search's last lines, `seconds` after it started."""
    spec, table = out.spec, out.table
    print()
    print(format_table(table, spec.searched))
    for row in table[table["status"] == layout.ERRORED].itertuples() if not table.empty else ():
        print(f"trial {row.trial_index} errored: {row.error}")
    print(f"\n{len(table)} trials ({', '.join(f'{v} {k}' for k, v in out.counts.items())}){out.continued_text}; {out.trial_epochs} "
          f"trial-epochs of at most {len(table) * spec.max_t}; {seconds:.0f} s")
    if spec.budget:
        print(f"budget: {spec.budget.describe()}; spent {out.spent.describe(spec.budget)}"
              + (" (the budget ended the search)" if out.budget_ended else ""))
    if out.best is not None:
        best = table.loc[table["best_cmap"].idxmax()]
        print(f"best: trial {best['trial_index']} cmap {best['best_cmap']:.4f} with "
              + ", ".join(f"{k}={best[k]:.4g}" if isinstance(best[k], float) else f"{k}={best[k]}"
                          for k in spec.searched))
        if "revalidation_mean_cmap" in out.best.header:
            print("re-validation (best-epoch cmap per fold):\n" + revalidate.format_ranking(out.ranking, spec.revalidate_folds))
            print("chosen by re-validation:\n" + out.best.header_text().rstrip())
        best_dir = storage.join(out.exp, layout.BEST_DIR)
        config = storage.join(best_dir, "config.yaml")
        predict = (f" (predict: python -m core.predict --model {storage.shell(best_dir)} --audio <soundscapes> "
                   "--out submission.csv)" if spec.spectrogram and not storage.is_uri(best_dir) else "")
        print(f"exported: {config} (retrain: python -m core.train --config {storage.shell(config)}), "
              f"{storage.join(best_dir, 'model.pt')}{predict}, trials.parquet, trials.csv")
    for row in out.trust:
        print(f"early stopping: {row['advice']}")
    print(f"report: {storage.join(out.exp, layout.REPORT)}")
