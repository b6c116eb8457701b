"""DEHB 0.1.2 (`dehb`) through its ask/tell interface with its documented defaults (eta 3, rand1_bin, mutation
0.5, crossover 0.5), fidelities 1..the benchmark's epochs, its jobs run on the simulated workers (DEHB's own
Dask workers are not started: one optimizer asked for up to W jobs at once). DEHB takes no initial config, so
it does not start from the benchmark's defaults. The pick is its incumbent (get_incumbents)."""
from __future__ import annotations

from common import Cluster, configspace, version

METHODS = ("dehb",)


def run(bench, task: str, seed: int, workers: int, compute: int, method: str) -> dict:
    import logging
    import tempfile

    from dehb import DEHB

    logging.getLogger("dehb").setLevel(logging.ERROR)
    cl = Cluster(bench, task, seed, workers, compute * bench.space().epochs)
    cs = configspace(cl.space, seed)
    with tempfile.TemporaryDirectory() as out:
        opt = DEHB(cs=cs, dimensions=len(cs), min_fidelity=1, max_fidelity=cl.max_t, n_workers=1, seed=seed,
                   output_path=out, log_level="ERROR", save_freq=None)
        blocked = False
        while True:
            while not blocked and cl.free() > 0:
                job = opt.ask()
                config = dict(job["config"])
                if not cl.start(job, config, job["fidelity"]):
                    blocked = True  # the job would exceed the budget: no more are started
            if not cl.running():
                break
            job, config, fidelity, value = cl.next()
            opt.tell(job, {"fitness": -value, "cost": float(cl.curve(config)[1][:fidelity].sum())})
        inc, _ = opt.get_incumbents()
    return cl.result(dict(inc), tool="dehb", method=method, version=version("dehb"), compute=compute)
