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
CUT = "cut_trials.txt"  # ids of the trials the search ended around (--time-budget, Ctrl-C): unfinished
RESULTS_LOG = "results_log.jsonl"  # the journal: every trial start, result and end in the driver's order (search.journal)
PLOTS = ("curves.png", "params.png", "importance.png")

# What became of a trial, in trials.csv, the live view and the report
COMPLETED, STOPPED_EARLY, ERRORED, DIVERGED, UNFINISHED = (
    "completed", "stopped_early", "errored", "diverged", "unfinished")
STATUSES = (COMPLETED, STOPPED_EARLY, ERRORED, DIVERGED, UNFINISHED)
USABLE = (COMPLETED, STOPPED_EARLY, UNFINISHED)  # a real score: may be exported or re-validated

SEARCHERS = ("tpe", "mftpe", "random")
DEFAULT_SEARCHER = "mftpe"  # --searcher when not given (tests/bench/replay.py measures why)
SCHEDULERS = ("asha", "none")
TAIL_FILL = ("auto", "on", "off")  # --tail-fill (search.scheduler.TailFill)
DEFAULT_SCHEDULER = "asha"  # --scheduler when not given
DEFAULT_STORAGE = "./results"
# the releases (major.minor) birdtune is tested with; pyproject.toml pins them, a search on others says so
TESTED_VERSIONS = {"ray": "2.60", "optuna": "5.0"}

# ASHA never judges a trial before this fraction of its epochs: a first rung at most three reductions by 3
# below max_t (Hyperband's bracket s = 3, eta = 3). Chosen on LCBench's development tasks
# (tests/bench/replay.py): there epoch-1 ranks predict almost nothing, and a first rung at epoch 2 of 52
# instead of 1 lowered the mean normalised regret by about 0.1 in every cell; a 8-epoch search keeps grace 1.
MIN_RUNG_FRACTION = 1 / 27


def grace_period(space_grace: int, max_t: int) -> int:
    """The epochs every trial gets before ASHA may stop it: the space's, raised to MIN_RUNG_FRACTION of max_t."""
    import math

    return max(1, min(max_t, max(int(space_grace), math.ceil(max_t * MIN_RUNG_FRACTION - 1e-9))))


def asha_rungs(max_t: int, grace_period: int, reduction_factor: int) -> list[int]:
    """ASHA's rungs as Ray's _Bracket makes them (grace * rf^k below max_t) and max_t itself: the one formula
    the scheduler, the searchers and the report use."""
    out, t = [], int(grace_period)
    while t < max_t:
        out.append(t)
        t *= int(reduction_factor)
    return out + [int(max_t)]
