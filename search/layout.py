"""Names the search's modules share: the files of an experiment, trial statuses, searchers, schedulers.
Imports nothing, so every module of search/ may import it."""

META_FILE = "search.yaml"  # the SearchSpec, written before the first trial; --resume and export read it
DB_FILE = "optuna.db"  # the Optuna study of a tpe search (SQLite)
REVALIDATE_DIR = "revalidate"  # the re-validation's own Tune experiment, inside the search's folder
BEST_DIR = "best"  # the exported model folder (core.bundle's files)
TRIALS = ("trials.parquet", "trials.csv")
CURVES = "curves.csv"
IMPORTANCE = "importance.csv"
REVALIDATION = "revalidation.csv"
REPORT = "report.html"
CUT = "cut_trials.txt"
RESULTS_LOG = "results_log.jsonl"  # every result in the order the driver took it: rebuilds ASHA on --resume  # ids of the trials the search ended around (--time-budget, Ctrl-C): unfinished
PLOTS = ("curves.png", "params.png", "importance.png")

# What became of a trial, in trials.csv, the live view and the report
COMPLETED, STOPPED_EARLY, ERRORED, DIVERGED, UNFINISHED = (
    "completed", "stopped_early", "errored", "diverged", "unfinished")
STATUSES = (COMPLETED, STOPPED_EARLY, ERRORED, DIVERGED, UNFINISHED)
USABLE = (COMPLETED, STOPPED_EARLY, UNFINISHED)  # a real score: may be exported or re-validated

SEARCHERS = ("tpe", "mftpe", "random")
DEFAULT_SEARCHER = "mftpe"  # --searcher when not given (tests/bench/replay.py measures why)
SCHEDULERS = ("asha", "none")
DEFAULT_STORAGE = "./results"
