"""What a stopped search (a killed driver, Ctrl-C, a storage that stopped answering) needs to continue with
nothing lost and nothing run twice.

Ray saves an experiment's state only every 10 s or more, while the driver's journal (search.journal) has
every trial start, result and end as it happened. On --resume, before Ray restores anything, `reconcile`
brings Ray's saved state up to the journal: a trial started since is added back under its own id (not
started again as a new trial), a trial that ended since is marked ended (not restarted), every trial's
result.json holds every result the driver took, each trial continues after the checkpoint its last result
names, and Ray's trial counter and concurrency limiter count what really happened. A search stopped before
Ray saved any state (no trial ran yet) starts afresh (`start_over`).

During a search, `RepairCheckpoints` does the same for a trial Ray restarts because its worker or node died.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from search import internals, journal, layout, storage

LIVE = ("PENDING", "RUNNING", "PAUSED")


@dataclass(frozen=True)
class Resumed:
    """What reconcile found: the trials Ray restores and what it had missed."""

    known: tuple[str, ...]  # every trial Ray restores
    finished: int  # of them, ended (completed or stopped early)
    added: int  # started after Ray's last save: back from the journal
    ended: int  # ended after Ray's last save: not restarted
    rows: int  # results that the trials' result.json in storage had missed

    def line(self) -> str:
        live = len(self.known) - self.finished
        since = [f"{n} {what}" for n, what in ((self.added, "started"), (self.ended, "ended"),
                                                (self.rows, "results recorded")) if n]
        return (f"birdtune: resuming {len(self.known)} trials: {self.finished} ended, {live} continue after their "
                f"last reported epoch" + (f" (since Ray's last saved state: {', '.join(since)}; taken from "
                                          f"{layout.RESULTS_LOG})" if since else ""))


def reconcile(exp: str, journal_path: str) -> Resumed | None:
    """Bring Ray's saved state in `exp` up to the journal (see the module's docstring); None when Ray saved no
    state the driver could restore (then no trial has run: start_over)."""
    events = journal.read(journal_path)
    found = _saved_state(exp)
    if found is None:
        if any(e["event"] == journal.START for e in events):
            raise RuntimeError(f"Ray's saved state is missing from {storage.display(exp)} although trials ran "
                               f"(see {journal_path})")
        return None
    state_path, state, generator_path, generator = found
    trials = []
    for trial_json, run_metadata in state["trial_data"]:
        trials.append(internals.trial_from_state(trial_json, run_metadata))
    known = {t.trial_id for t in trials}
    added = 0
    for e in events if generator is not None else ():  # (Ray's random and grid generators would make them again)
        if e["event"] == journal.START and e["trial_id"] not in known:
            trials.append(internals.trial_from_state(*e["trial"]))
            known.add(e["trial_id"])
            added += 1
    rows: dict[str, list[dict]] = defaultdict(list)
    for e in journal.results(events):
        if "row" in e:
            rows[e["trial_id"]].append(e["row"])
    ends = journal.ended(events)
    ended = restored_rows = 0
    for trial in trials:
        internals.relocate(trial, exp)
        mine = rows.get(trial.trial_id, [])
        restored_rows += _complete_result_files(exp, trial, mine)
        if mine and _iteration(mine[-1]) > _iteration(internals.last_result(trial)):
            internals.set_last_result(trial, mine[-1])
        end = ends.get(trial.trial_id)
        if end and (trial.status in LIVE or (trial.status == "ERROR" and end == "TERMINATED")):
            trial.set_status(end)
            ended += 1
        try:
            continue_from_last_result(trial, internals.last_result(trial) or None, restored=True)
        except OSError:  # the storage did not answer: Ray's own choice stands
            pass
    state["trial_data"] = [list(internals.trial_state(t)) for t in trials]
    internals.use_this_runs_stopper(state)
    storage.replace_bytes(state_path, json.dumps(state).encode())
    if generator is not None:
        live = {t.trial_id for t in trials if t.status in LIVE + ("ERROR",)}
        internals.fix_generator_state(generator, len(trials), live)
        storage.replace_bytes(generator_path, internals.dump_generator_state(generator))
    out = Resumed(tuple(t.trial_id for t in trials), sum(t.status == "TERMINATED" for t in trials), added, ended,
                  restored_rows)
    journal.append(journal_path, {"event": journal.RESUME, "known": list(out.known), "added": added, "ended": ended,
                                  "rows": restored_rows})
    return out


# what a search leaves in its folder before its first trial starts (search.yaml is kept)
STARTING = re.compile(r"^(tuner\.pkl|experiment_state-.*|search_gen_state-.*|searcher-state-.*|basic-variant-state-.*"
                      r"|\.tmp.*|optuna\.db|results_log\.jsonl|cut_trials\.txt|train_trial_.*)$")


def start_over(exp: str, journal_path: str, study: str | None) -> None:
    """Clear what a search stopped before Ray saved any state left behind (Ray's files, an Optuna study that
    may hold trials asked for but never run), keeping search.yaml: the search then starts as new. Only
    for a search whose journal has no trial start (reconcile returned None)."""
    for name in storage.listdir(exp):
        if STARTING.match(name):
            storage.delete(storage.join(exp, name))
    for path in (journal_path, study):
        if path and not storage.is_uri(path):
            storage.delete(path)


def _saved_state(exp: str):
    """(path, experiment state, generator path, generator state) of Ray's newest readable saved state, or
    None (also when Ray had not saved the whole of its first state: tuner.pkl, the experiment's and the search
    generator's). A state file that does not read (it should not happen: uploads are atomic, see
    internals.atomic_local_uploads) is set aside and the one before it taken."""
    names = storage.listdir(exp)  # (a storage that does not answer raises: nothing is cleared then)
    if "tuner.pkl" not in names or not internals.is_saved_state(names):
        return None
    for session in reversed(internals.saved_sessions(names)):
        path = storage.join(exp, f"{internals.STATE_PREFIX}{session}.json")
        try:
            state = internals.load_experiment_state(storage.read_bytes(path) or b"")
        except ValueError:
            _set_aside(path)
            continue
        generator_path = generator = None
        for name in sorted((n for n in names if n.startswith(internals.GENERATOR_PREFIX)), reverse=True):
            try:
                generator_path = storage.join(exp, name)
                generator = internals.load_generator_state(storage.read_bytes(generator_path) or b"")
                break
            except Exception:  # an unreadable pickle: the one before it
                _set_aside(generator_path)
                generator_path = generator = None
        return path, state, generator_path, generator
    return None


def _set_aside(path: str) -> None:
    data = storage.read_bytes(path)
    if data is not None:
        storage.write_bytes(path + ".unreadable", data)
    storage.delete(path)


def _iteration(result: dict | None) -> int:
    return int((result or {}).get("training_iteration") or 0)


# --- a trial's result files ---------------------------------------------------------------------
def _read_rows(path: str) -> list[dict]:
    rows = []
    for line in (storage.read_text(path) or "").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # a line cut off: what follows is not there either
            break
    return rows


def _complete_result_files(exp: str, trial, rows: list[dict]) -> int:
    """Write the trial's result.json and progress.csv from the journal's rows when storage holds fewer (Ray
    uploads them only with its saved state, so a killed driver's storage misses its last results); returns
    how many rows were missing."""
    if not rows or not trial.storage.trial_dir_name:
        return 0
    folder = storage.join(exp, trial.storage.trial_dir_name)
    have = _read_rows(storage.join(folder, "result.json"))
    if len(have) >= len(rows):
        return 0
    encoder = internals.result_encoder()
    storage.replace_bytes(storage.join(folder, "result.json"),
                          "".join(json.dumps(r, cls=encoder) + "\n" for r in rows).encode())
    storage.replace_bytes(storage.join(folder, "progress.csv"), _progress_csv(rows).encode())
    return len(rows) - len(have)


def _progress_csv(rows: list[dict]) -> str:
    """progress.csv as Ray's CSVLoggerCallback writes it: each result without its config, flattened with '/',
    the columns of the first."""
    from ray.tune.utils import flatten_dict

    flat = [flatten_dict({k: v for k, v in r.items() if k != "config"}, delimiter="/") for r in rows]
    out = io.StringIO()
    writer = csv.DictWriter(out, list(flat[0]))
    writer.writeheader()
    for r in flat:
        writer.writerow({k: v for k, v in r.items() if k in writer.fieldnames})
    return out.getvalue()


# --- which checkpoint a trial continues from ------------------------------------------------------
def continue_from_last_result(trial, last: dict[str, Any] | None, restored: bool) -> None:
    """Make the trial continue after the checkpoint its last result (`last`, else the last one in its
    result.json) names, when that one is newer than the checkpoint Ray registered or Ray's is gone.

    Ray records a result (`train`) and registers its checkpoint in a second call to the trial (`save`): a
    driver stopped in between, or a worker or node lost in between, leaves the previous checkpoint
    registered, and the trial would run that epoch again. The checkpoint is in storage before its result is
    sent, so the one the result names is taken (an unnamed newer one is not: its epoch is not in the curve).

    Ray also deletes a trial's older checkpoints (beyond tuning.KEEP_CHECKPOINTS) as soon as it registers a
    new one, while a saved state may still name an older one ('Could not recover from checkpoint as it does
    not exist on storage anymore'): on a restored trial (`restored`) the named one is taken when still
    there, else the newest."""
    kept = [r for r in internals.checkpoint_results(trial) if _exists(r.checkpoint)]
    gone = trial.checkpoint is not None and not _exists(trial.checkpoint)
    current = None if trial.checkpoint is None or gone else trial.checkpoint
    if restored:
        internals.set_checkpoints(trial, kept)
    newest, named = _newest(trial, last)
    if newest is None or not (gone and restored or named and (current is None or _index(newest.checkpoint) > _index(current))):
        return
    internals.set_checkpoints(trial, ([r for r in kept if _index(r.checkpoint) < _index(newest.checkpoint)]
                                      + [newest]), newest, set_latest=True, index=_index(newest.checkpoint))


def _newest(trial, last: dict | None = None):
    """The checkpoint the trial's last result names (`last`, else the last in its result.json in storage),
    else its newest checkpoint folder; with the result that goes with it, and whether a result named it.
    (None, False) without any."""
    fs, folder = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    found = dict(sorted((_number(info.path), info.path) for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
                        if _number(info.path) >= 0))
    if not found:
        return None, False
    if last is None:
        rows = []
        try:
            with fs.open_input_stream(f"{folder}/result.json") as f:
                for line in f.readall().decode().splitlines():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        break
        except OSError:
            pass
        named = [r for r in rows if r.get("checkpoint_dir_name")]
        last = named[-1] if named else {}
    elif not last.get("checkpoint_dir_name"):
        last = {}
    index = int(last["checkpoint_dir_name"].rsplit("_", 1)[1]) if last else None
    is_named = index in found
    if not is_named:
        index, last = max(found), {}
    return internals.training_result(tune.Checkpoint(path=found[index], filesystem=fs),
                                     last or dict(internals.last_result(trial) or {})), is_named


def _number(path: str) -> int:
    """The number in a checkpoint folder's name (checkpoint_000003 -> 3; Ray numbers them in order), or -1."""
    m = re.search(r"checkpoint_(\d+)$", str(path).rstrip("/"))
    return int(m.group(1)) if m else -1


def _index(checkpoint) -> int:
    return _number(checkpoint.path)


def _exists(checkpoint) -> bool:
    return checkpoint.filesystem.get_file_info(checkpoint.path).type != pafs.FileType.NotFound


class RepairCheckpoints(tune.Callback):
    """A trial Ray restarts during the search (its worker crashed, its node was lost) continues after the
    checkpoint its last result names (continue_from_last_result), with every result it reported still in its
    result.json: Ray's loggers restart a trial's result.json and progress.csv from the copies in storage,
    which Ray uploads only with its saved state, so the results since then were dropped (a trial retried
    after epoch 3 read 1, 2, 4). The driver's own copies, which hold every result, go to storage first."""

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Ray has set the failed trial PENDING; it restores it from trial.checkpoint when it starts it again
        try:
            _upload_result_files(trial)
            continue_from_last_result(trial, dict(internals.last_result(trial) or {}), restored=False)
        except OSError:  # the storage did not answer (StorageWatch, called first, ends the search if it is
            pass  # gone): Ray restores from the checkpoint it registered, as without this callback


def _upload_result_files(trial) -> None:
    """The driver's result.json and progress.csv of a trial, copied to the trial's folder in storage."""
    import os

    for name in ("result.json", "progress.csv"):
        local = os.path.join(trial.local_path, name)
        if os.path.isfile(local):
            with open(local, "rb") as fh:
                data = fh.read()
            fs, folder = trial.storage.storage_filesystem, trial.storage.trial_fs_path
            if isinstance(fs, pafs.LocalFileSystem):
                storage.replace_bytes(f"{folder}/{name}", data)
            else:
                fs.create_dir(folder, recursive=True)
                with fs.open_output_stream(f"{folder}/{name}") as f:
                    f.write(data)
