"""birdtune's own recorded tables as replay benchmarks (tests/bench/benchmarks.py): the finetune space's configs,
each trained for the demo's 8 epochs with 2 training seeds (tests/bench/data/finetune-<size>.parquet, made by
tests/bench/record.py). A config the table lacks is answered by its nearest recorded config in the space
scaled to [0, 1] (log scale where the space samples on one), with one of its 2 runs drawn per (replay seed,
config): every method meets the same noise, and a config met again answers with its other run. A config's
quality is the mean over its 2 runs of the best epoch; a table's reference best and median are over its
recorded configs. One task: "table".
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data"


@dataclasses.dataclass
class Table:
    """The recorded curves, indexed for nearest-neighbour lookups."""

    space: object
    params: list[str]
    configs: pd.DataFrame  # config_id -> param values
    cmap: np.ndarray  # (configs, seeds, epochs)
    seconds: np.ndarray  # (configs, seeds, epochs)
    quality: np.ndarray  # (configs,) mean over seeds of the best epoch
    tree: object

    @classmethod
    def load(cls, space_name: str, size: str) -> "Table":
        import spaces
        from scipy.spatial import cKDTree

        df = pd.read_parquet(DATA / f"{space_name}-{size}.parquet")
        space = spaces.get(space_name)
        dists = space.distributions()
        params = list(dists)
        ids = sorted(df["config_id"].unique())
        seeds = sorted(df["seed"].unique())
        epochs = int(df["epoch"].max())
        full = df.set_index(["config_id", "seed", "epoch"]).sort_index()
        cmap = np.full((len(ids), len(seeds), epochs), np.nan)
        secs = np.full_like(cmap, np.nan)
        pos = {c: i for i, c in enumerate(ids)}
        for (c, s, e), row in full.iterrows():
            cmap[pos[c], seeds.index(s), e - 1] = row["cmap"]
            secs[pos[c], seeds.index(s), e - 1] = row["seconds"]
        # a diverged run stopped early: its missing epochs score 0 and take no time
        cmap, secs = np.nan_to_num(cmap, nan=0.0), np.nan_to_num(secs, nan=0.0)
        configs = df.drop_duplicates("config_id").set_index("config_id").loc[ids, params].reset_index(drop=True)
        table = cls(space, params, configs, cmap, secs, cmap.max(axis=2).mean(axis=1), None)
        table.tree = cKDTree(table.scaled(configs.to_dict("records")))
        return table

    def scaled(self, configs: list[dict]) -> np.ndarray:
        dists = self.space.distributions()
        out = np.zeros((len(configs), len(self.params)))
        for j, p in enumerate(self.params):
            d = dists[p]
            x = np.array([float(c[p]) for c in configs])
            lo, hi = float(d["low"]), float(d["high"])
            if d["log"]:
                x, lo, hi = np.log(x), math.log(lo), math.log(hi)
            out[:, j] = (x - lo) / (hi - lo)
        return out

    def nearest(self, config: dict) -> int:
        return int(self.tree.query(self.scaled([config])[0])[1])


class TableBenchmark:
    """One of birdtune's recorded tables as a benchmark of one task ("table"), see the module's docstring."""

    def __init__(self, size: str):
        self.name = f"birdtune-{size}"
        self.size = size
        self.tasks = self.dev_tasks = ["table"]
        self._table: Table | None = None

    @property
    def table(self) -> Table:
        if self._table is None:  # (loaded when first used: a process that only lists the tasks skips it)
            self._table = Table.load("finetune", self.size)
        return self._table

    def space(self):
        return self.table.space.on_demo()

    def reference(self, task: str) -> tuple[float, float]:
        return float(self.table.quality.max()), float(np.median(self.table.quality))

    def quality(self, task: str, config: dict) -> float:
        """The config's quality at full length: its nearest recorded config's mean best epoch over the runs."""
        return float(self.table.quality[self.table.nearest(config)])

    def curves(self, task: str, configs: list[dict], seed: int = 0, hits: dict | None = None):
        t, hits = self.table, {} if hits is None else hits
        rows = [t.nearest(c) for c in configs]
        metric, seconds = [], []
        for row in rows:
            # the noise draw: which recorded training seed answers, the same for every method under this seed;
            # a config hit again gets the other seed (a rerun near it is a new training run, not a copy)
            base = int(np.random.default_rng([seed, row]).integers(t.cmap.shape[1]))
            draw = (base + hits.get(row, 0)) % t.cmap.shape[1]
            hits[row] = hits.get(row, 0) + 1
            metric.append(t.cmap[row, draw])
            seconds.append(t.seconds[row, draw])
        return np.array(metric), np.array(seconds)


default = TableBenchmark("default")
tiny = TableBenchmark("tiny")
