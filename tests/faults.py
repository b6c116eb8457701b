"""A search with faults injected into its trials, for tests/test_faults.py; the product has no such hook:
the faults go in through search.trainable.TrialHooks, which search.run.main accepts.

    python tests/faults.py "FAULT[|FAULT...]" FAULT_DIR -- ARGS
    FAULT: <crash|oom|diverge>@<key>=<value>[;after=<epoch>][;times=<n>]
           slow@<key>=<value>;seconds=<s>[;lead=1]

faults the trials whose config has key == value, or with key `trial` the value-th trial to start (0, 1,
...: the launch order when trials run one at a time): crash/oom raise after reporting any epoch >= `after`
(at most `times` times in all, counted in a file under FAULT_DIR, so a retried trial can succeed);
diverge makes the loss NaN from the first step; slow sleeps `seconds` before reporting each epoch, and with
lead=1 reports a cmAP of 0.99 (ASHA never stops a leader). ARGS go to `python -m search.run`.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class Fault:
    kind: str
    key: str
    value: str
    after: int
    times: int
    folder: str
    seconds: float = 0.0
    lead: bool = False

    @classmethod
    def parse(cls, spec: str, folder: str) -> "Fault":
        kind, _, rest = spec.partition("@")
        target, *opts = rest.split(";")
        key, _, value = target.partition("=")
        opt = dict(o.split("=") for o in opts)
        return cls(kind, key, value, int(opt.get("after", 1)), int(opt.get("times", 1)), folder,
                   float(opt.get("seconds", 0)), opt.get("lead") == "1")

    def hits(self, config: dict) -> bool:
        if self.key == "trial":
            return launch_number(self.folder) == int(self.value)
        return self.key in config and abs(float(config[self.key]) - float(self.value)) <= 1e-12

    def loss_factory(self, config: dict, name: str, smoothing: float, loss=None):
        from core.losses import build_loss

        loss = loss or build_loss(name, smoothing)
        if self.kind == "diverge" and self.hits(config):
            return lambda logits, y: loss(logits, y) * float("nan")
        return loss

    def wrap_report(self, config: dict, report):
        if self.kind == "slow" and self.hits(config):
            def slow(metrics, checkpoint_dir):
                import time

                time.sleep(self.seconds)
                report({**metrics, "cmap": 0.99} if self.lead else metrics, checkpoint_dir)

            return slow
        if self.kind not in ("crash", "oom") or not self.hits(config):
            return report
        counter = os.path.join(self.folder, f"fault-{self.key}-{config[self.key] if self.key != 'trial' else self.value}")

        def faulty(metrics, checkpoint_dir):
            report(metrics, checkpoint_dir)
            done = os.path.getsize(counter) if os.path.exists(counter) else 0
            if metrics["epoch"] >= self.after and done < self.times:
                with open(counter, "a") as fh:
                    fh.write("x")
                if self.kind == "oom":
                    import torch

                    raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by tests/faults.py)")
                raise RuntimeError(f"injected crash after epoch {self.after} (tests/faults.py)")

        return faulty


def launch_number(folder: str) -> int:
    """This trial's place in the order trials first started (0, 1, ...), kept in FAULT_DIR/launch-order.txt
    (a retried trial keeps its number)."""
    import fcntl

    from ray import tune

    me = tune.get_context().get_trial_id()
    with open(os.path.join(folder, "launch-order.txt"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        seen = fh.read().split()
        if me not in seen:
            fh.write(me + "\n")
            seen.append(me)
    return seen.index(me)


@dataclass(frozen=True)
class Faults:
    """Several faults, each aimed at its own trials."""
    faults: tuple[Fault, ...]

    def loss_factory(self, config: dict, name: str, smoothing: float):
        loss = None
        for f in self.faults:
            loss = f.loss_factory(config, name, smoothing, loss)
        return loss

    def wrap_report(self, config: dict, report):
        for f in self.faults:
            report = f.wrap_report(config, report)
        return report


def main() -> int:
    spec, folder, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: faults.py FAULT[|FAULT...] FAULT_DIR -- SEARCH_ARGS"
    from search import run
    from search.trainable import TrialHooks

    faults = Faults(tuple(Fault.parse(one, folder) for one in spec.split("|")))
    return run.main(args, hooks=TrialHooks(loss_factory=faults.loss_factory, wrap_report=faults.wrap_report))


if __name__ == "__main__":
    from search import shutdown

    shutdown.end_process(main())
