"""A search with a fault injected into its trials, for tests/test_faults.py; the product has no such hook:
the faults go in through search.trainable.TrialHooks, which search.run.main accepts.

    python tests/faults.py "<crash|oom|diverge>@<key>=<value>[;after=<epoch>][;times=<n>]" FAULT_DIR -- ARGS

faults the trials whose config has key == value: crash/oom raise after reporting any epoch >= `after`
(at most `times` times in all, counted in a file under FAULT_DIR, so a retried trial can succeed);
diverge makes the loss NaN from the first step. ARGS go to `python -m search.run`.
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
    value: float
    after: int
    times: int
    folder: str

    @classmethod
    def parse(cls, spec: str, folder: str) -> "Fault":
        kind, _, rest = spec.partition("@")
        target, *opts = rest.split(";")
        key, _, value = target.partition("=")
        opt = dict(o.split("=") for o in opts)
        return cls(kind, key, float(value), int(opt.get("after", 1)), int(opt.get("times", 1)), folder)

    def hits(self, config: dict) -> bool:
        return self.key in config and abs(float(config[self.key]) - self.value) <= 1e-12

    def loss_factory(self, config: dict, name: str, smoothing: float):
        from core.losses import build_loss

        loss = build_loss(name, smoothing)
        if self.kind == "diverge" and self.hits(config):
            return lambda logits, y: loss(logits, y) * float("nan")
        return loss

    def wrap_report(self, config: dict, report):
        if self.kind not in ("crash", "oom") or not self.hits(config):
            return report
        counter = os.path.join(self.folder, f"fault-{self.key}-{config[self.key]}")

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


def main() -> int:
    spec, folder, sep, *args = sys.argv[1:]
    assert sep == "--", "usage: faults.py SPEC FAULT_DIR -- SEARCH_ARGS"
    from search import run
    from search.trainable import TrialHooks

    fault = Fault.parse(spec, folder)
    return run.main(args, hooks=TrialHooks(loss_factory=fault.loss_factory, wrap_report=fault.wrap_report))


if __name__ == "__main__":
    sys.exit(main())
