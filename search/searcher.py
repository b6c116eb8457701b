"""The searchers `--searcher` names: the ASHA-aware Optuna searcher (`tpe`)
and the rung-aware multi-fidelity TPE built on it (`mftpe`).

Stock `OptunaSearch` tells Optuna that a trial ASHA cut off after one epoch is COMPLETE with its
one-epoch score, so TPE models it as if it were a full-length result. `AshaAwareOptunaSearch` reports
every epoch as an intermediate value and tells Optuna what really happened: PRUNED for a trial stopped
before max_t (Optuna's TPE ranks pruned trials by how far they got, then by their last value), FAIL for
an errored or diverged one, COMPLETE with its best-epoch score for one that ran to max_t.

Even so TPE's "good" set holds about a tenth of the trials, filled from COMPLETE ones first: the epoch-1
scores of the many trials ASHA stops shape nothing. `MultiFidelityTPE` (BOHB's idea, asynchronous) makes
every trial's score at every ASHA rung it reached an observation and proposes from a TPE fitted on the
highest rung that holds enough of them, so cheap early scores guide the next configs from the start.
"""
from __future__ import annotations

import math
import os
import random
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

import spaces
from search import internals, journal
from search.budget import owed
from search.layout import DB_FILE, DEFAULT_SEARCHER, SEARCHERS, asha_rungs

DEFAULT = DEFAULT_SEARCHER


def sqlite_storage(path: str) -> optuna.storages.RDBStorage:
    """The study's SQLite file. A reader (optuna-dashboard) may hold it for a moment: a write waits for it
    rather than fail. Written ahead (WAL) without waiting for the disk at every commit (synchronous=NORMAL):
    Optuna commits each parameter of each trial on its own, and a commit that waits for the disk made a
    suggestion cost tens of milliseconds; a killed driver still leaves every commit (the OS has them), only a
    power cut may take the last few, as it would the journal's last lines."""
    import sqlalchemy

    storage = optuna.storages.RDBStorage(f"sqlite:///{os.path.abspath(path)}",
                                         engine_kwargs={"connect_args": {"timeout": 60}})

    def pragmas(connection, record) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", pragmas)
    storage.engine.dispose()  # (the connection that made the tables goes: every one from now on has the pragmas)
    return storage


# the user attribute of an Optuna trial that names the Tune trial it was asked for: written when it is asked for,
# so a restored searcher finds every trial's Optuna trial whatever its saved state missed
RAY_TRIAL = "ray_trial_id"


class AshaAwareOptunaSearch(OptunaSearch):
    def __init__(self, *, max_t: int, time_attr: str = spaces.TIME_ATTR, db_path: str | None = None,
                 copy_study: bool = False, journal: str | None = None, rungs: list[int] | None = None,
                 concurrency: int = 1, **kw):
        if db_path:
            kw["storage"] = sqlite_storage(db_path)
        super().__init__(**kw)
        self._max_t, self._time_attr, self._db_path, self._copy_study = max_t, time_attr, db_path, copy_study
        self._journal = journal
        self._rungs = sorted(rungs or [max_t])  # ASHA's rungs and max_t: where a running trial is next judged
        self._concurrency = concurrency
        self._meter = None  # search.budget.Meter of a search with a budget
        self._last_epoch: dict[str, int] = {}
        self._diverged: set[str] = set()
        self._resume: dict[str, Any] = {}
        # what the study holds of each running trial (its intermediate values, params and distributions): kept
        # here as this driver writes it, read from the study once per trial, where it is otherwise unknown
        # (after a restore). Reading a trial back from SQLite takes several queries: doing it every epoch was
        # the driver's largest cost at hundreds of trials
        self._known: dict[str, optuna.trial.FrozenTrial] = {}

    def use_budget(self, meter) -> None:
        """Start trials only while the budget `meter` counts allows (search.budget)."""
        self._meter = meter

    def resume_with(self, *, journal: str | None, study: str | None, known, meter=None) -> None:
        """Where this restored searcher's journal and study are now, which trials Ray restores
        (search.recovery.reconcile) and the budget's meter of this run; restore(), which Ray calls next,
        brings the searcher up to them."""
        self._resume = {"journal": journal, "study": study, "known": set(known)}
        self._meter = meter

    def budget_says(self, trial_id: str) -> str | None:
        """None when a new trial may start; else what suggest answers Tune: not now (None's marker, "wait")
        while running trials may still free the epochs they are owed, FINISHED when none runs."""
        if self._meter is None or trial_id in internals.ot_trials(self):
            return None
        done = internals.completed(self)
        running = [self._last_epoch.get(t, 0) for t in internals.ot_trials(self) if t not in done]
        running += list(self._meter.continuing.values())  # paused trials ASHA promoted (search.scheduler)
        if self._meter.allows(owed(running, self._rungs), self._rungs[0], self._concurrency):
            return None
        if running:
            return "wait"
        self._meter.full = True
        return Searcher.FINISHED

    def suggest(self, trial_id: str) -> dict | None:
        blocked = self.budget_says(trial_id)
        if blocked is not None:
            return None if blocked == "wait" else blocked
        if trial_id not in internals.ot_trials(self) and getattr(self, "_orphans", None):
            # asked for before the driver stopped, for a trial that never started: reuse, do not add
            internals.ot_trials(self)[trial_id] = self._orphans.pop(0)
        config = super().suggest(trial_id)
        if config is not None and trial_id in internals.ot_trials(self):
            internals.ot_trials(self)[trial_id].set_user_attr(RAY_TRIAL, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in internals.completed(self) or trial_id not in internals.ot_trials(self):
            return
        epoch = int(result.get(self._time_attr, 0))
        self._last_epoch[trial_id] = max(epoch, self._last_epoch.get(trial_id, 0))
        if result.get("status") == "diverged":  # its score is a placeholder, not a measurement
            self._diverged.add(trial_id)
            return
        value = result.get(self.metric)
        if value is not None and epoch >= 1:
            frozen = self._stored(trial_id)
            if frozen.state.is_finished():  # told before the driver stopped: nothing to add
                internals.completed(self).add(trial_id)
                return
            # after a restart from a checkpoint an epoch may come again: Optuna keeps the first and warns
            if epoch not in frozen.intermediate_values:
                internals.ot_trials(self)[trial_id].report(float(value), epoch)
                frozen.intermediate_values[epoch] = float(value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in internals.completed(self) or trial_id not in internals.ot_trials(self):
            return
        if result and not error:
            self.on_trial_result(trial_id, result)  # the final result may not have come through on_trial_result
        ot_trial = internals.ot_trials(self)[trial_id]
        frozen = self._stored(trial_id)
        values = frozen.intermediate_values
        if error or trial_id in self._diverged:
            state, value = TrialState.FAIL, None
        elif self._last_epoch.get(trial_id, 0) >= self._max_t and values:
            state, value = TrialState.COMPLETE, max(values.values()) if self.mode == "max" else min(values.values())
        else:  # stopped by the scheduler (or the time budget) before max_t
            state, value = TrialState.PRUNED, None
        if frozen.state == TrialState.RUNNING:  # already told before a driver restart: do not count it twice
            internals.tell(internals.ot_study(self), ot_trial, value, state=state)
        internals.completed(self).add(trial_id)
        self._known.pop(trial_id, None)

    def _stored(self, trial_id: str) -> optuna.trial.FrozenTrial:
        """The study's record of a running trial: read once, then kept up to date by this driver's reports."""
        if trial_id not in self._known:
            self._known[trial_id] = internals.frozen(internals.ot_study(self), internals.ot_trials(self)[trial_id])
        return self._known[trial_id]

    def save(self, checkpoint_path: str) -> None:
        """The searcher's state, and with URI storage a copy of the study beside it: Ray uploads both in
        the same sync, so the bucket always holds a study that matches the state (a copy taken at other
        moments could lag the state, whose trials a resumed searcher would then not find)."""
        super().save(checkpoint_path)
        if self._copy_study and self._db_path and os.path.isfile(self._db_path):
            import sqlite3

            target = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), DB_FILE)
            src, dst = sqlite3.connect(self._db_path), sqlite3.connect(target)
            try:
                src.backup(dst)  # a consistent snapshot, even while a reader holds the file
                # one self-contained file: the copy is written ahead (WAL) like its source, and what sits in
                # its -wal file would not travel with it (the copy fetched by --resume is optuna.db alone)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
                src.close()

    def restore(self, checkpoint_path: str) -> None:
        """The saved state, then brought up to the study and the journal (_catch_up). The study continued is
        the file --resume names (resume_with: with URI storage, the local copy it fetched), else the
        experiment's own optuna.db beside the searcher state, else the path recorded when the search started."""
        resume, meter = self._resume, self._meter  # (the saved state below replaces every attribute)
        super().restore(checkpoint_path)
        self._resume, self._meter, self._known = resume, meter, {}  # (the study is what holds the truth now)
        here = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), DB_FILE)
        found = next((p for p in (resume.get("study"), here) if p and os.path.isfile(p)), None)
        if self._db_path and found:
            self._db_path = found
            internals.reopen_study(self, sqlite_storage(found))
        self._journal = resume.get("journal") or self._journal
        self._catch_up(resume.get("known"))

    def _catch_up(self, known: set[str] | None) -> None:
        """What the saved state missed (Ray saves it every 10 s or more; the study and the journal have every
        step): every trial Ray restores is bound to its Optuna trial (by RAY_TRIAL), and only those; trials
        already told are not told again; every journaled result is replayed (the intermediate values a saved
        state missed, mftpe's rung scores), and a trial the journal says ended is told how, since Ray will
        not restart it. Optuna trials asked for but never started are taken over by the next new trials, so
        the study holds each trial once."""
        study = internals.ot_study(self)
        everything = study.get_trials(deepcopy=False)
        ot = internals.ot_trials(self)
        events = journal.read(self._journal) if self._journal else []
        if known is not None:
            by_tune = {t.user_attrs[RAY_TRIAL]: t for t in everything if RAY_TRIAL in t.user_attrs}
            for tid in [t for t in ot if t not in known]:
                del ot[tid]
            for tid in known:
                if tid not in ot and tid in by_tune:
                    ot[tid] = internals.bind_trial(study, internals.trial_id(by_tune[tid]))
            self._add_missing(study, {t for t in known if t not in ot}, events)
        stored = {internals.trial_id(t): t for t in everything}
        for tid, trial in ot.items():
            if stored.get(internals.trial_id(trial)) is not None and stored[internals.trial_id(trial)].state.is_finished():
                internals.completed(self).add(tid)
        last: dict[str, dict] = {}
        for e in journal.results(events):
            if e["trial_id"] in ot:
                self.on_trial_result(e["trial_id"], self._as_result(e))
                last[e["trial_id"]] = e
        for tid, status in journal.ended(events).items():
            if tid in ot and tid not in internals.completed(self):
                row = last.get(tid)
                self.on_trial_complete(tid, self._as_result(row) if row else None, error=status == "ERROR")
        bound = {internals.trial_id(t) for t in ot.values()}
        self._orphans = [internals.bind_trial(study, internals.trial_id(t)) for t in everything
                         if t.state == TrialState.RUNNING and internals.trial_id(t) not in bound]
        # the sampler's random state is the saved one: it would draw again the configs it drew since (a seeded
        # random sampler repeats them exactly), so it continues from a fresh state
        study.sampler.reseed_rng()

    def _add_missing(self, study: optuna.Study, missing: set[str], events: list[dict]) -> None:
        """Trials Ray restores that the study does not hold: with storage in a bucket the study is a copy
        taken with Ray's last saved state, and the journal (uploaded more often) knows trials started since.
        Each is added with the config it ran, from the journal; the replay of its results follows."""
        started = {e["trial_id"]: e for e in events if e["event"] == journal.START and e["trial_id"] in missing}
        for tid, event in started.items():
            config = internals.trial_from_state(*event["trial"]).config
            fixed = optuna.trial.FixedTrial(config)
            internals.define_space(self, fixed)
            ot_id = internals.add_running_trial(study, fixed.params, fixed.distributions, {RAY_TRIAL: tid})
            internals.ot_trials(self)[tid] = internals.bind_trial(study, ot_id)

    def _as_result(self, event: dict) -> dict:
        """A journal's result event as the result Tune passed the searcher."""
        return {self._time_attr: event["epoch"], self.metric: event["cmap"], "status": event.get("status")}


class MultiFidelityTPE(AshaAwareOptunaSearch):
    """Asynchronous multi-fidelity TPE: every trial's best cmAP up to each ASHA rung it reached is an
    observation of that rung; a new trial's values come from a TPE fitted on the highest rung with at
    least `min_points` observations (before that, from the study's own sampler). The study in optuna.db
    still holds every trial with its real state (the proposal is enqueued, then asked for as usual), so
    PRUNED/FAIL, importances and re-validation work as with `tpe`.

    The rung models run in memory, one per rung, with Optuna's constant liar: a trial proposed from a
    rung and not yet scored there counts as a poor point, so concurrent proposals spread. Past
    `history` observations a rung's model keeps the best half and the most recent rest.

    Once `local_after` trials have a score at the first rung, a share `local` of the proposals are a step
    from the incumbent instead (the best score of the model's rung; local_move), as PriorBand and SMAC
    sample near theirs: with hundreds of trials the model's good region is wide, and the best config's
    neighbours are where the next gains are."""

    def __init__(self, *, rungs: list[int], min_points: int, history: int = 256, seed: int = 0, local: float = 0.0,
                 local_after: int = 0, **kw):
        super().__init__(rungs=rungs, **kw)
        self._min_points, self._history, self._seed = min_points, history, seed
        self._obs: dict[int, dict[str, tuple[dict[str, Any], float]]] = {r: {} for r in self._rungs}
        self._best_so_far: dict[str, float] = {}
        self._models: dict[int, tuple[optuna.Study, int]] = {}  # rung -> (in-memory study, observations in it)
        self._pending: dict[str, tuple[int, int]] = {}  # trial_id -> (rung, model trial number) of its proposal
        self._proposed = 0
        self._local, self._local_after = local, local_after
        self._maybe_waiting = True  # the study may hold an enqueued proposal not yet asked for (see _waiting)

    # --- observations --------------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        super().on_trial_result(trial_id, result)
        self.observe(trial_id, result)  # (also a told trial's: a restored searcher replays every result)

    def observe(self, trial_id: str, result: dict) -> None:
        """Record the trial's best score so far when it reaches a rung (also used to rebuild the rungs
        from an experiment's recorded results)."""
        if trial_id not in internals.ot_trials(self) or result.get("status") == "diverged":
            return
        value, epoch = result.get(self.metric), int(result.get(self._time_attr, 0))
        if value is None or epoch < 1:
            return
        best = max(float(value), self._best_so_far.get(trial_id, float("-inf")))
        self._best_so_far[trial_id] = best
        if epoch in self._obs and trial_id not in self._obs[epoch]:
            frozen = self._stored(trial_id) if trial_id not in internals.completed(self) else \
                internals.frozen(internals.ot_study(self), internals.ot_trials(self)[trial_id])
            pending = self._pending.get(trial_id)
            if pending and pending[0] == epoch and epoch in self._models:
                study, _ = self._model(epoch)  # (may rebuild it, which drops the placeholders)
                if self._pending.get(trial_id) == pending:  # the proposal's placeholder gets its real score
                    internals.tell(study, pending[1], best)
                    self._models[epoch] = (study, self._models[epoch][1] + 1)
                    self._pending.pop(trial_id)
            # with the trial's own distributions: a conditional space's trials differ in what they searched
            self._obs[epoch][trial_id] = (frozen.params, best, frozen.distributions)

    def _catch_up(self, known: set[str] | None) -> None:
        # the rung models hold the saved random state too (and placeholders of proposals that may never be
        # scored): rebuilt from the observations when next asked, seeded anew from the study's size (which
        # every proposal asked for since the last build has grown; the same seed and observations would
        # propose again what was proposed before the driver stopped)
        self._models, self._pending, self._maybe_waiting = {}, {}, True
        self._reseed = len(internals.ot_study(self).get_trials(deepcopy=False))
        super()._catch_up(known)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result, error)
        pending = self._pending.pop(trial_id, None)
        if pending and pending[0] in self._models:  # stopped (or failed) before its rung: no score there
            study, _ = self._models[pending[0]]
            internals.tell(study, pending[1], state=TrialState.FAIL)

    # --- proposals -----------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        blocked = self.budget_says(trial_id)
        if blocked is not None:  # (before a proposal is made and enqueued)
            return None if blocked == "wait" else blocked
        fresh = trial_id not in internals.ot_trials(self) and not getattr(self, "_orphans", None)
        if fresh and not self._waiting():
            proposal = self._propose(trial_id)
            if proposal is not None:
                internals.ot_study(self).enqueue_trial(proposal)  # the study's next ask() takes these values
        return super().suggest(trial_id)

    def _waiting(self) -> bool:
        """Whether the study holds a proposal enqueued and not yet asked for, which the next ask() takes: only
        one a driver stopped in between left (this driver asks for its own at once), so the study is read
        only until it holds none."""
        if self._maybe_waiting:
            self._maybe_waiting = bool(internals.ot_study(self).get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        return self._maybe_waiting

    def _model(self, rung: int) -> tuple[optuna.Study, int]:
        """The rung's model study, brought up to date with its observations. It grows by the new ones;
        once it holds 2 x `history` trials it is rebuilt from the best `history` / 2 observations and the
        most recent `history` / 2 (so asking stays cheap however long the search runs)."""
        study, consumed = self._models.get(rung) or (None, 0)
        items = list(self._obs[rung].values())
        if study is None or len(study.get_trials(deepcopy=False)) >= 2 * self._history:
            seed = self._seed * 1009 + rung + 100_003 * getattr(self, "_reseed", 0)
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True,
                                                 n_startup_trials=0, constant_liar=True)
            level = optuna.logging.get_verbosity()
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            optuna.logging.set_verbosity(level)
            self._pending = {t: p for t, p in self._pending.items() if p[0] != rung}
            if len(items) > self._history:
                best = sorted(range(len(items)), key=lambda i: -items[i][1])[: self._history // 2]
                keep = sorted(set(best) | set(range(len(items) - self._history // 2, len(items))))
                add = [items[i] for i in keep]
            else:
                add = items
        else:
            add = items[consumed:]
        for params, value, dists in add:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
        self._models[rung] = (study, len(items))
        return study, len(items)

    def _propose(self, trial_id: str) -> dict[str, Any] | None:
        rung = next((r for r in reversed(self._rungs) if len(self._obs[r]) >= self._min_points), None)
        if rung is None:
            return None  # too few scores anywhere yet: the study's sampler decides
        if self._local and len(self._obs[self._rungs[0]]) >= self._local_after:
            rng = random.Random(self._seed * 7919 + self._proposed + 100_003 * getattr(self, "_reseed", 0))
            if rng.random() < self._local:
                self._proposed += 1
                return local_move(max(self._obs[rung].values(), key=lambda o: o[1]), rng)
        study, _ = self._model(rung)
        trial = study.ask()
        internals.define_space(self, trial)
        self._pending[trial_id] = (rung, trial.number)
        self._proposed += 1
        return dict(trial.params)


def local_move(observation, rng: random.Random, rate: float = 0.5, scale: float = 0.1) -> dict[str, Any]:
    """A config near an observed one (params, score, distributions): each parameter (at least one) moves with
    probability `rate`, a number by a normal step of `scale` of its (log) range, kept within its bounds and
    step, a choice to another at random; drawn again (up to 10 times) when rounding gives the config back."""
    params = observation[0]
    for _ in range(10):
        out = _step(observation, rng, rate, scale)
        if out != params:
            break
    return out


def _step(observation, rng: random.Random, rate: float, scale: float) -> dict[str, Any]:
    params, _, dists = observation
    out, names = dict(params), list(params)
    moving = [n for n in names if rng.random() < rate] or [rng.choice(names)]
    for name in moving:
        d, v = dists[name], params[name]
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            others = [c for c in d.choices if c != v]
            out[name] = rng.choice(others) if others else v
            continue
        f = math.log if d.log else float
        lo, hi = f(d.low), f(d.high)
        x = min(hi, max(lo, f(v) + rng.gauss(0.0, scale) * (hi - lo)))
        x = math.exp(x) if d.log else x
        if d.step:
            x = d.low + round((x - d.low) / d.step) * d.step
        x = min(d.high, max(d.low, x))
        out[name] = int(round(x)) if isinstance(d, optuna.distributions.IntDistribution) else float(x)
    return out


def tune_domains(space: spaces.Space) -> dict[str, Any]:
    """The space as Ray Tune domains, for Ray's random search. Bounds stay inclusive, as Optuna's."""
    out: dict[str, Any] = {}
    for name, d in space.distributions().items():
        if d["kind"] == "categorical":
            out[name] = tune.choice(d["choices"])
        elif d["kind"] == "float":
            if d["step"]:
                out[name] = tune.quniform(d["low"], d["high"], d["step"])
            else:
                out[name] = (tune.loguniform if d["log"] else tune.uniform)(d["low"], d["high"])
        elif d["log"]:
            out[name] = tune.lograndint(d["low"], d["high"] + 1)  # randint's upper bound is exclusive
        elif d["step"] and d["step"] != 1:
            out[name] = tune.qrandint(d["low"], d["high"], d["step"])  # qrandint's is inclusive
        else:
            out[name] = tune.randint(d["low"], d["high"] + 1)
    return out


def startup_trials(num_samples: int | None) -> int:
    """Random trials before TPE models the results: Optuna's 10 would leave a 16-trial search only 6
    guided trials; a quarter of the trials, between 4 and 10 (10 when their number is open)."""
    return min(10, max(4, num_samples // 4)) if num_samples else 10


# mftpe's model starts once a rung holds this many scores (or the space's dimensions + 2, if fewer). 5 was
# chosen at trial-count cells on the finetune tables (seeds 0-99: below dimensions + 2 in 10 of 12 cells); 3 then
# lowered the regret at equal compute on LCBench's development tasks (seeds 0-39 at 4, 8, 16; 0-19 at 32: 0.330
# against 0.353 at 4 x 2, 0.103 against 0.115 at 32 x 2) and stayed within the intervals on the finetune tables
# (seeds 200-299), so 3 it is (docs/search-quality.md).
MFTPE_MIN_POINTS = 3

# mftpe's share of proposals near the incumbent, once this many trials have a first-rung score. Replayed on
# LCBench's development tasks at equal compute (seeds 0-19: 0.1, 0.15, 0.2, 0.3, 0.6 at 32 x 2; 0.15 from the
# start lost at 4 and 8 trials' epochs), then checked on seeds 20-39 at 16 and 32 x 2, 4 (docs/search-quality.md).
MFTPE_LOCAL, MFTPE_LOCAL_AFTER = 0.15, 100


def make_searcher(kind: str, space: spaces.Space, *, max_t: int, seed: int, study_name: str,
                  db_path: str | None, concurrency: int, num_samples: int, grace_period: int = 1,
                  reduction_factor: int = 4, exp: str | None = None, journal: str | None = None):
    """(search_alg, param_space) for Tuner: TPE (`tpe`), the multi-fidelity TPE (`mftpe`) over the space's
    define-by-run function, or Ray's random search."""
    internals.fast_suggestions()  # TPE's log Phi and Phi vectorised, Ray's signatures kept: the same suggestions, sooner
    points = [dict(p) for p in space.points]
    common = dict(space=space.define, metric=spaces.METRIC, mode=spaces.MODE, max_t=max_t, points_to_evaluate=points,
                  study_name=study_name, db_path=db_path, copy_study=bool(exp and "://" in exp), journal=journal,
                  concurrency=concurrency)
    rungs = asha_rungs(max_t, grace_period, reduction_factor)
    if kind == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup_trials(num_samples))
        return AshaAwareOptunaSearch(sampler=sampler, rungs=rungs, **common), None
    if kind == "mftpe":
        dims = len(space.distributions())
        sampler = optuna.samplers.RandomSampler(seed=seed)  # only until a rung has enough scores
        return MultiFidelityTPE(rungs=rungs, min_points=min(dims + 2, MFTPE_MIN_POINTS), seed=seed, sampler=sampler,
                                local=MFTPE_LOCAL, local_after=MFTPE_LOCAL_AFTER, **common), None
    if kind == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # Tune's max_concurrent_trials does not reach a SearchGenerator: the generator limits itself
        return (BasicVariantGenerator(points_to_evaluate=points, random_state=seed, max_concurrent=concurrency),
                tune_domains(space))
    raise ValueError(f"unknown searcher '{kind}'; choose {', '.join(SEARCHERS)}")
