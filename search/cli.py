"""The command line of `python -m search.run`: argparse, and the error a bad one is. Flags that describe the search default to
None here, so that `--resume` can tell a flag given from a default (plan.py resolves the defaults)."""
from __future__ import annotations

import argparse

import spaces
from core.errors import UserError
from search import layout


class UsageError(UserError):
    """A bad command line; reported as one line with exit code 2 before Ray starts."""

EXAMPLES = """examples:
  python -m search.run                                  # finetune space on the built-in demo data (CPU ok)
  python -m search.run --space smoke                    # seconds: check a set-up
  python -m search.run --csv Data/train.csv --set init_checkpoint=base.pt --gpus-per-trial 0.25
  python -m search.run --space scratch --csv Data/train.csv --set model_name=tf_efficientnet_b0.ns_jft_in1k
  python -m search.run --address auto --storage-path s3://bucket/birdtune   # an existing Ray cluster
  python -m search.run --revalidate-top 3 --folds 1,2                      # pick the winner on two more folds
  python -m search.run --searcher random --scheduler none                  # the baseline to compare against
  python -m search.run --time-budget 2h                                    # as many trials as 2 hours allow
  python -m search.run --epoch-budget 64                                   # ... as 64 trial-epochs allow
  python -m search.run --name finetune-20261125-101500 --resume            # continue after a crash
  python -m search.export results/finetune-20261125-101500                 # rewrite the outputs
"""

# the flags whose values search.yaml records: --resume takes them from there
SPEC_FLAGS = ("space", "csv", "num_samples", "epochs", "grace_period", "seed", "searcher", "scheduler", "revalidate_top",
              "folds", "set", "cpus_per_trial", "gpus_per_trial", "time_budget", "epoch_budget", "tail_fill")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m search.run",
                                description="Ray Tune + Optuna TPE + ASHA over a search space; the best config exported.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", help=f"search space: {', '.join(spaces.SPACES)} (default finetune)")
    p.add_argument("--csv", help="notebook-format CSV (default: the built-in demo data)")
    p.add_argument("--num-samples", type=int,
                   help="number of trials (default: the space's; with a budget and no --num-samples, as many as fit)")
    p.add_argument("--epochs", type=int, help="epochs per trial = ASHA max_t (default: the space's)")
    p.add_argument("--gpus-per-trial", type=float, help="e.g. 1, 0.5 or 0.25 (packs trials on a GPU; default 0)")
    p.add_argument("--cpus-per-trial", type=float, help="whole CPUs per trial (default 1)")
    p.add_argument("--concurrency", type=int, help="trials at once (default: as many as the resources allow)")
    p.add_argument("--name", help="experiment name (default <space>-<date>-<time>)")
    p.add_argument("--storage-path", default=layout.DEFAULT_STORAGE,
                   help="folder or URI (s3://, gs://, file://, NFS path)")
    p.add_argument("--address", help="existing Ray cluster: auto or host:port (Ray Client, ray://, is refused)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --name with Tuner.restore, as its search.yaml describes it")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its last checkpoint")
    p.add_argument("--seed", type=int, help="seed of the TPE sampler and of every trial (default 0)")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="compute budget in search time (2h, 90m, 45s or seconds): trials start until it would be "
                        "spent and the search ends there; --resume continues with what is left")
    p.add_argument("--epoch-budget", type=int, metavar="N",
                   help="compute budget in trial-epochs (the same on any hardware): trials start until it would "
                        "be spent; the search ends at N")
    p.add_argument("--no-dashboard", action="store_true", help="start the local Ray cluster without its dashboard")
    p.add_argument("--dashboard-host", default="127.0.0.1", help="dashboard bind address (default loopback only)")
    p.add_argument("--searcher", choices=layout.SEARCHERS,
                   help=f"tpe: Optuna TPE, ASHA-aware; mftpe: multi-fidelity TPE on every ASHA rung's scores "
                        f"(both keep their study in <experiment>/optuna.db); random: Ray's random search "
                        f"(default {layout.DEFAULT_SEARCHER})")
    p.add_argument("--scheduler", choices=layout.SCHEDULERS,
                   help="asha: stop weak trials early (default); none: every trial runs all epochs")
    p.add_argument("--tail-fill", choices=layout.TAIL_FILL,
                   help="once every trial has started, workers that would sit idle continue the best stopped trials "
                        "from their checkpoints for as long as fits before the last trial ends (asha with "
                        "--num-samples; auto: on from 8 trials at once, the default)")
    p.add_argument("--grace-period", type=int, metavar="EPOCHS",
                   help="epochs every trial runs before ASHA may stop it (default: the space's, at least "
                        "1/27 of --epochs; the report says whether early ranks held)")
    p.add_argument("--revalidate-top", type=int, metavar="K",
                   help="after the search, retrain the K best configs at full length on --folds and pick the best mean")
    p.add_argument("--folds", metavar="F1,F2,...",
                   help="validation folds for --revalidate-top (default: the two folds after the search's fold)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a base TrainConfig field")
    p.add_argument("--log-to", metavar="TARGETS",
                   help="also log every trial to mlflow[=URI], tensorboard and/or wandb[=PROJECT], comma-separated "
                        "(Ray Tune's logger callbacks; pip install -e '.[tracking]')")
    p.add_argument("--verbose", action="store_true", help="Ray's full trial tables and logs")
    return p.parse_args(argv)
