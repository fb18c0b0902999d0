"""The driver's one path to MLflow while a phase runs: a tracking store that stops answering
for a while (a server restarted, a network cut) costs the phase nothing and MLflow nothing.

Each phase has one `Outbox` per process (`open_outbox`), shared by the trial callback, the
phase's end and its report. A call is made at once; when the store does not answer
(`tracking.store_unreachable`: a refused or timed-out connection, a 502/503/504, a locked
database) it is queued, in memory and appended to PHASE/mlflow_pending.jsonl, and so is every
call after it, in order. The queue is replayed at the next call made at least RETRY_S after the
last failed try (at the next trial result, in practice) and at the phase's end; what is still
queued when the phase ends is one line saying how many calls of which kind, and the command that
replays them, `clipsearch mlflow replay PHASE` (`replay_pending`), which also ends the runs the
phase left open. A phase resumed with `--resume` replays its queue first.

A queued call names its run by role, not by id: PARENT (phase.json's parent run) or
`trial_ref(ID)` (a trial's child run, found by its tags; a trial that started during the outage
has no run until its replayed opening creates it). Each call keeps its own time (a run's start
and end, its metrics' timestamps), so that a replayed run reads as it happened. A store that
answers and refuses a call (a bad value, a deleted run) costs one line and that call, never
the queue behind it.

Calls are made under `tracking.fail_fast`: MLflow's own retries would hold each call against a
stopped server for minutes, while the queue retries anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import tracking
from .provenance import DataSource
from .results import PHASE_JSON, read_json
from .results.atomic import atomic_write_text

PENDING_FILE = "mlflow_pending.jsonl"
#: seconds between two tries of a store that did not answer (each try is one quick request)
RETRY_S = 5.0
PARENT = "parent"
#: a store that refuses calls says so this many times, then once more in the phase's last line
SHOWN_REFUSALS = 3
#: what each kind of call is called in the lines
KINDS = {"open_trial": "trial run(s) to open", "log_metrics": "metric batch(es)", "end_run": "run end(s)",
         "close_running": "close(s) of runs left RUNNING", "log_artifact": "artifact(s)",
         "log_artifacts": "artifact folder(s)"}


def trial_ref(trial_id: str) -> str:
    return f"trial:{trial_id}"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Outbox:
    """A phase's MLflow calls: made, or queued and replayed in order (see the module)."""

    def __init__(self, uri: str, experiment_id: str | None, parent_run_id: str, folder: Path | None):
        self.uri, self._experiment_id = uri, experiment_id
        self.folder = None if folder is None else Path(folder)
        self.runs = {PARENT: parent_run_id}  # role -> run id, as found
        self.queue: deque[dict] = deque(self._read())
        self.replayed = self.refused = 0
        self.last_failure: BaseException | None = None  # why the store's last try failed
        self._client = None
        self._next_try = 0.0
        self._down_since: float | None = None  # time.monotonic() of this outage's first failure

    # ------------------------------------------------------------------ the calls

    def open_trial(self, trial_id: str, params: dict[str, Any], datasets: tracking.Sources | None = None) -> str:
        """The trial's child run, found and reopened or new (tracking.trial_run); its role."""
        self._submit({"op": "open_trial", "trial": trial_id, "start_time": _now_ms(),
                      "params": {k: str(v) for k, v in params.items() if v is not None}, "datasets": datasets})
        return trial_ref(trial_id)

    def log_metrics(self, run: str, metrics: dict[str, Any], step: int) -> None:
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._submit({"op": "log_metrics", "run": run, "metrics": numbers, "step": step, "timestamp": _now_ms()})

    def end_run(self, run: str, status: str) -> None:
        self._submit({"op": "end_run", "run": run, "status": status, "end_time": _now_ms()})

    def close_running(self, run: str, status: str = "KILLED") -> None:
        """End the child runs of `run` still RUNNING when the call is made (or replayed)."""
        self._submit({"op": "close_running", "run": run, "status": status, "end_time": _now_ms()})

    def log_artifact(self, run: str, path: Path | str, artifact_path: str | None = None) -> None:
        self._submit({"op": "log_artifact", "run": run, "path": str(path), "artifact_path": artifact_path})

    def log_artifacts(self, run: str, folder: Path | str, artifact_path: str | None = None) -> None:
        self._submit({"op": "log_artifacts", "run": run, "path": str(folder), "artifact_path": artifact_path})

    # ------------------------------------------------------------------ queue and replay

    def _submit(self, op: dict) -> None:
        if self.queue and time.monotonic() >= self._next_try:
            self.replay()
        if self.queue:  # behind what is queued: the store sees the calls in the order they were made
            self._enqueue(op)
            return
        try:
            self._apply(op)
        except Exception as exc:  # noqa: BLE001 - MLflow's, the network's, the database's
            if not tracking.store_unreachable(exc):
                self._refused(op, exc)
                return
            self._enqueue(op)
            self._failed(exc)

    def replay(self, quiet: bool = False) -> bool:
        """Make the queued calls in order until one finds the store still down; True when none
        is left. The file keeps what is left. `quiet`: no line of the outage's start or end
        (the replay command says it its own way)."""
        done = 0
        while self.queue:
            op = self.queue[0]
            try:
                self._apply(op)
            except Exception as exc:  # noqa: BLE001
                if tracking.store_unreachable(exc):
                    self.last_failure = exc
                    if not quiet:
                        self._failed(exc)
                    break
                self._refused(op, exc)
            self.queue.popleft()
            done += 1
        if done:
            self.replayed += done
            self._write()
            if not self.queue and self._down_since is not None and not quiet:
                _say(f"the tracking store {self.uri} answers again after "
                     f"{time.monotonic() - self._down_since:.0f} s; {done} queued call(s) replayed")
                self._down_since = None
        return not self.queue

    def settle(self) -> int:
        """At the phase's end: one more try; what is still queued (and the refusals past those
        shown) is one line. Returns how many calls are still queued."""
        if self.queue:
            self.replay()
        if self.refused > SHOWN_REFUSALS:
            _say(f"{self.refused} call(s) in all were refused by the store and not logged (the first "
                 f"{SHOWN_REFUSALS} are above)")
        if self.queue:
            where = self.folder if self.folder is not None else "this phase (its driver kept them in memory only)"
            _say(f"{describe(self.queue)} not logged yet: the tracking store {self.uri} does not answer, and the "
                 f"phase's runs it has not ended stay RUNNING there until they are; once it answers, run "
                 f"`clipsearch mlflow replay {where}`")
        return len(self.queue)

    def _failed(self, exc: BaseException) -> None:
        self._next_try = time.monotonic() + RETRY_S
        if self._down_since is None:
            self._down_since = time.monotonic()
            kept = f"in {self._path()} and " if self.folder is not None else ""
            _say(f"the tracking store {self.uri} does not answer ({_reason(exc)}); the phase goes on, its MLflow "
                 f"calls are queued {kept}replayed in order when it answers again")

    def _refused(self, op: dict, exc: BaseException) -> None:
        self.refused += 1
        if self.refused <= SHOWN_REFUSALS:
            tracking.not_logged(_what(op) + (", and further refusals are counted at the phase's end"
                                             if self.refused == SHOWN_REFUSALS else ""), exc)

    # ------------------------------------------------------------------ one call

    @property
    def client(self):
        if self._client is None:
            self._client = tracking.client(self.uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        """The parent run's experiment (a phase.json from before it was kept: asked of the store)."""
        if self._experiment_id is None:
            self._experiment_id = self.client.get_run(self.runs[PARENT]).info.experiment_id
        return self._experiment_id

    def _apply(self, op: dict) -> None:
        with tracking.fail_fast():
            if op["op"] == "open_trial":
                self.runs[trial_ref(op["trial"])] = tracking.trial_run(
                    self.client, self.experiment_id, self.runs[PARENT], op["trial"], op["params"],
                    datasets=_sources(op["datasets"]), start_time=op["start_time"])
                return
            run_id = self._run_id(op["run"])
            if op["op"] == "log_metrics":
                tracking.log_metrics(self.client, run_id, op["metrics"], op["step"], timestamp=op["timestamp"])
            elif op["op"] == "end_run":
                tracking.end_run(self.client, run_id, op["status"], end_time=op["end_time"])
            elif op["op"] == "close_running":
                tracking.close_running(self.client, self.experiment_id, run_id, op["status"], end_time=op["end_time"])
            elif op["op"] == "log_artifact":
                self.client.log_artifact(run_id, op["path"], artifact_path=op["artifact_path"])
            elif op["op"] == "log_artifacts":
                self.client.log_artifacts(run_id, op["path"], artifact_path=op["artifact_path"])
            else:
                raise ValueError(f"unknown queued call {op['op']!r}")

    def _run_id(self, role: str) -> str:
        """The run a role names; a trial's is found by its tags (opened by another process)."""
        if role not in self.runs:
            trial_id = role.split(":", 1)[1]
            found = tracking.find_runs(self.client, self.experiment_id, parent=self.runs[PARENT], trial=trial_id)
            if not found:
                raise LookupError(f"no MLflow run of trial {trial_id} under parent run {self.runs[PARENT]}")
            self.runs[role] = found[0].info.run_id
        return self.runs[role]

    # ------------------------------------------------------------------ the file

    def _path(self) -> Path:
        return self.folder / PENDING_FILE

    def _enqueue(self, op: dict) -> None:
        op = _storable(op)
        self.queue.append(op)
        if self.folder is not None:
            with _locked(self.folder), open(self._path(), "a", encoding="utf-8") as file:
                file.write(json.dumps(op) + "\n")  # one write of one line: a reader sees it whole or not at all
                file.flush()
                os.fsync(file.fileno())

    def _write(self) -> None:
        """The file holds what is left of the queue (removed when nothing is)."""
        if self.folder is None:
            return
        with _locked(self.folder):
            if self.queue:
                atomic_write_text(self._path(), "".join(json.dumps(op) + "\n" for op in self.queue))
            else:
                self._path().unlink(missing_ok=True)

    def _read(self) -> list[dict]:
        """What an earlier process left queued (a driver killed or ended during an outage); a
        last line cut off by a kill mid-write is left out, and said to be."""
        if self.folder is None or not self._path().is_file():
            return []
        ops = []
        for number, line in enumerate(self._path().read_text(encoding="utf-8").splitlines(), 1):
            try:
                ops.append(json.loads(line))
            except ValueError:
                _say(f"{self._path()}: line {number} is not a whole call (cut off by a kill?); left out")
        return ops


def _storable(op: dict) -> dict:
    """The call as JSON holds it: a trial's data sets as their fields (asked for now, once)."""
    if not callable(op.get("datasets")):
        return op
    try:
        sources = [asdict(source) for source in op["datasets"]()]
    except Exception as exc:  # noqa: BLE001 - the data sets are bookkeeping beside the run
        tracking.not_logged(f"the dataset inputs of trial {op['trial']}", exc)
        sources = None
    return {**op, "datasets": sources}


def _sources(datasets) -> tracking.Sources | None:
    if datasets is None or callable(datasets):
        return datasets
    return lambda: [DataSource(**fields) for fields in datasets]


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """The phase folder flock-ed for the block: a driver's append and a replay's rewrite of the
    queue file never interleave (where the file system has no flock, they go unlocked)."""
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def describe(ops) -> str:
    """'5 MLflow call(s) (2 metric batch(es), 1 run end(s), ...)'."""
    counts = Counter(op["op"] for op in ops)
    kinds = ", ".join(f"{n} {KINDS.get(kind, kind)}" for kind, n in counts.items())
    return f"{sum(counts.values())} MLflow call(s) ({kinds})"


def _what(op: dict) -> str:
    """The call, as a line names what was not logged."""
    run = op.get("run") or trial_ref(op["trial"])
    return {"open_trial": f"{run}'s run", "log_metrics": f"{run}'s metrics at step {op.get('step')}",
            "end_run": f"{run}'s end ({op.get('status')})", "close_running": f"the close of {run}'s open runs",
            }.get(op["op"], f"{run}'s {op['op']} of {op.get('path')}")


def _reason(exc: BaseException) -> str:
    return tracking.failure_reason(exc, limit=200)


def _say(text: str) -> None:
    print(f"clipsearch: MLflow: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ one per phase

_OPEN: dict[tuple, Outbox] = {}


def open_outbox(folder: Path | str | None, uri: str, experiment_id: str | None, parent_run_id: str) -> Outbox:
    """The phase's outbox in this process (one, whoever asks: the callback, the phase's end, its
    report); `folder` None keeps the queue in memory only (a callback pickled before it had one)."""
    folder = None if folder is None else Path(folder).resolve()
    key = (folder, uri, parent_run_id)
    if key not in _OPEN:
        _OPEN[key] = Outbox(uri, experiment_id, parent_run_id, folder)
    return _OPEN[key]


def phase_outbox(phase_dir: Path, uri: str | None = None) -> Outbox | None:
    """The outbox of the phase whose phase.json is in `phase_dir` (`uri` instead of its tracking
    URI, when given); None when phase.json names no MLflow run."""
    state = read_json(Path(phase_dir) / PHASE_JSON, "phase.json", "rerun the phase")
    if not (state.get("parent_run_id") and state.get("tracking_uri")):
        return None
    return open_outbox(phase_dir, uri or state["tracking_uri"], state.get("mlflow_experiment_id"),
                       state["parent_run_id"])


def pending_phases(path: Path) -> list[Path]:
    """The phase folders at or under `path` with calls queued."""
    path = Path(path)
    return sorted({p.parent for p in path.rglob(PENDING_FILE)} | ({path} if (path / PENDING_FILE).is_file() else set()))


def replay_pending(phase_dir: Path, uri: str | None = None) -> tuple[int, str | None]:
    """`clipsearch mlflow replay`: the phase's queued calls made now, in order. Returns how many
    were made and, when some are left, one line saying what and why (else None)."""
    box = phase_outbox(phase_dir, uri)
    if box is None or not box.queue:
        return 0, None
    before = box.replayed
    if box.replay(quiet=True):
        return box.replayed - before, None
    return box.replayed - before, (f"{describe(box.queue)} still queued: the tracking store {box.uri} does not "
                                   f"answer ({_reason(box.last_failure)}); run the same command once it does")
