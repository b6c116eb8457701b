"""NePS 0.17 through its AskAndTell wrapper: `neps-priorband` (PriorBand on its default Hyperband base, eta 3,
with the benchmark's defaults as the prior of every parameter at NePS's default confidence, "low") and
`neps-async-hb` (asynchronous Hyperband, eta 3, uniform sampling, the prior config first), the epoch as the
fidelity (1..the benchmark's epochs). Up to W configs are asked for before their results are told. The pick is
the config with the best reported value."""
from __future__ import annotations

from common import Cluster, distributions, version

METHODS = ("neps-priorband", "neps-async-hb")
FIDELITY = "epoch"


def search_space(space):
    import neps

    defaults = dict(space.points[0]) if space.points else {}
    elements = {}
    for name, d in distributions(space).items():
        prior = defaults.get(name)
        if d["kind"] == "categorical":
            elements[name] = neps.HPOCategorical(choices=list(d["choices"]), prior=prior)
        elif d["kind"] == "int":
            elements[name] = neps.HPOInteger(int(d["low"]), int(d["high"]), log=bool(d["log"]), prior=prior)
        else:
            elements[name] = neps.HPOFloat(float(d["low"]), float(d["high"]), log=bool(d["log"]), prior=prior)
    elements[FIDELITY] = neps.HPOInteger(1, space.epochs, is_fidelity=True)
    return neps.SearchSpace(elements)


def run(bench, task: str, seed: int, workers: int, compute: int, method: str) -> dict:
    import logging
    import random

    import neps
    import numpy as np

    logging.getLogger("neps").setLevel(logging.ERROR)
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    cl = Cluster(bench, task, seed, workers, compute * bench.space().epochs)
    space = search_space(cl.space)
    if method == "neps-priorband":
        algorithm = neps.algorithms.priorband(space)
    else:
        algorithm = neps.algorithms.async_hb(space, sample_prior_first=True)
    opt = neps.AskAndTell(algorithm)
    best: tuple[float, dict | None] = (-float("inf"), None)
    blocked = False
    while True:
        while not blocked and cl.free() > 0:
            trial = opt.ask()
            config = {k: v for k, v in trial.config.items() if k != FIDELITY}
            if not cl.start(trial.metadata.id, config, int(trial.config[FIDELITY])):
                blocked = True  # the job would exceed the budget: no more are started
        if not cl.running():
            break
        trial_id, config, epoch, value = cl.next()
        if value > best[0]:
            best = (value, config)
        opt.tell(trial_id, {"objective_to_minimize": -value, "cost": float(cl.curve(config)[1][:epoch].sum())})
    return cl.result(best[1], tool="neps", method=method, version=version("neural-pipeline-search"), compute=compute)
