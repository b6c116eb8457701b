"""SMAC3 2.4.1 (`smac-hyperband`): its MultiFidelityFacade with its defaults (a random-forest model, EI, the
Hyperband intensifier with eta 3) through ask/tell, budgets 1..the benchmark's epochs (rounded to whole
epochs), the benchmark's defaults added to its initial design. Up to W trials are asked for before their
results are told. The pick is its incumbent (intensifier.get_incumbent: the best at the highest budget)."""
from __future__ import annotations

from common import Cluster, configspace, version

METHODS = ("smac-hyperband",)


def run(bench, task: str, seed: int, workers: int, compute: int, method: str) -> dict:
    import tempfile
    from pathlib import Path


    from smac import MultiFidelityFacade, Scenario
    from smac.runhistory.dataclasses import TrialValue

    cl = Cluster(bench, task, seed, workers, compute * bench.space().epochs)
    cs = configspace(cl.space, seed)
    with tempfile.TemporaryDirectory() as out:
        scenario = Scenario(cs, deterministic=True, n_trials=1_000_000, min_budget=1, max_budget=cl.max_t, seed=seed,
                            output_directory=Path(out) / "smac")
        design = MultiFidelityFacade.get_initial_design(scenario, additional_configs=[cs.get_default_configuration()])
        opt = MultiFidelityFacade(scenario, target_function=lambda config, seed=0, budget=None: 0.0,
                                  initial_design=design, overwrite=True, logging_level=40)
        blocked = False
        while True:
            while not blocked and cl.free() > 0:
                info = opt.ask()
                if not cl.start(info, dict(info.config), info.budget):
                    blocked = True  # the trial would exceed the budget: no more are started
            if not cl.running():
                break
            info, config, fidelity, value = cl.next()
            opt.tell(info, TrialValue(cost=-value, time=float(cl.curve(config)[1][:fidelity].sum())))
        inc = opt.intensifier.get_incumbent()
    return cl.result(dict(inc) if inc is not None else None, tool="smac", method=method, version=version("smac"),
                     compute=compute)
