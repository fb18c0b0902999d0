"""The MLflow side of a phase on the driver: a child run per trial under the phase's parent.

Ray's own MLflowLoggerCallback (ray.air.integrations.mlflow) does not fit: it keeps its
trial -> run map only in memory, so a phase resumed after a driver kill would open a second
run for every trial and leave the first RUNNING, and it logs against training_iteration
rather than the epoch. This callback finds each trial's run by its tags instead
(clipsearch.tracking) and logs every epoch at step = epoch.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from .. import tracking_outbox
from ..config import flatten
from ..results import STATE_DIR, append_history
from ..results.ranking import better

_SKIP = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag", "epoch", "should_checkpoint"}


class MLflowTrialRuns(Callback):
    """Params (the trial's flat config), the code's version and the trial's data sets at the
    start, metrics per epoch, FINISHED / FAILED at the end; a trial retried after a failure keeps
    its run. `base` (the phase's Base as phase.json holds it) resolves a trial's config into the
    data sets it reads; without it no dataset input is logged. Every call goes through the
    phase's outbox (clipsearch.tracking_outbox, its queue in `folder`, the phase folder): a store
    that stops answering holds up neither the trials nor Tune's loop, and gets what it missed
    when it answers again."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, base: dict | None = None,
                 folder: str | Path | None = None):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.base = base
        self.folder = None if folder is None else str(Path(folder).resolve())
        self._box = None
        self._opened: set[str] = set()
        self._ended: set[str] = set()

    def __getstate__(self) -> dict:
        # Ray pickles callbacks with the experiment; the outbox and the trials opened are rebuilt
        return {**self.__dict__, "_box": None, "_opened": set(), "_ended": set()}

    @property
    def box(self) -> tracking_outbox.Outbox:
        if getattr(self, "_box", None) is None:  # a callback pickled before the outbox: no folder, memory only
            self._box = tracking_outbox.open_outbox(getattr(self, "folder", None), self.tracking_uri,
                                                    self.experiment_id, self.parent_run_id)
        return self._box

    def _run(self, trial) -> str:
        """The trial's run (its role in the outbox), opened once per driver and trial start."""
        opened = self.__dict__.setdefault("_opened", set())
        if trial.trial_id not in opened:
            values = flatten(trial.config)
            self.box.open_trial(trial.trial_id, values,
                                datasets=lambda: trial_datasets(getattr(self, "base", None), values))
            opened.add(trial.trial_id)
        return tracking_outbox.trial_ref(trial.trial_id)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.__dict__.setdefault("_opened", set()).discard(trial.trial_id)  # a retried trial's run opens again
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: v for k, v in result.items() if k not in _SKIP}
        self.box.log_metrics(self._run(trial), metrics, step=int(result["epoch"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED")

    def on_experiment_end(self, trials, **info):
        # the trials a time budget stops end TERMINATED without on_trial_complete: their runs
        # end as trials.csv has them, not KILLED with what an interruption cut off
        ended = self.__dict__.setdefault("_ended", set())
        for trial in trials:
            if trial.trial_id in self.__dict__.get("_opened", ()) and trial.trial_id not in ended and \
                    trial.status in ("TERMINATED", "ERROR"):
                self._end(trial, "FINISHED" if trial.status == "TERMINATED" else "FAILED")

    def _end(self, trial, status: str) -> None:
        self.box.end_run(self._run(trial), status)
        self.__dict__.setdefault("_ended", set()).add(trial.trial_id)


def trial_datasets(base: dict | None, values: dict) -> list:
    """The data sets of a trial whose flat config is `values` over the phase's base (none
    without a base: a callback pickled by a phase from before the base was handed to it)."""
    if base is None:
        return []
    from ..provenance import data_sources
    from .space import Base

    return data_sources(Base.from_json(base).config(values, "trial config"))


class ProgressLines(Callback):
    """One line on stderr per epoch and per trial outcome (Tune's own tables go to stdout,
    which holds only the command's JSON result). A finished trial's line says how far the phase
    is: trials done of its total, the best value so far beside the chance level, the time spent
    and an estimate of the time left."""

    def __init__(self, phase: str, metric: str, epochs: int, total: int | None = None, mode: str = "max",
                 done_before: int = 0, best_before: float | None = None):
        self.phase, self.metric, self.epochs, self.total = phase, metric, epochs, total
        self.mode = mode  # max or min: which value is the best so far
        # a run extending a finished phase counts on from the phase's trials and best value
        self.done_before = done_before
        self.started, self.best, self.chance = time.monotonic(), best_before, None

    def _say(self, trial, text: str) -> None:
        print(f"[{self.phase}] trial {trial.trial_id}: {text}", file=sys.stderr, flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._say(trial, "started " + ", ".join(f"{k}={_short(v)}" for k, v in flatten(trial.config).items()))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric, float("nan"))
        self.chance = result.get("chance_objective", self.chance) if self.metric == "objective" else None
        if isinstance(value, (int, float)) and value == value and (self.best is None or self._better(value)):
            self.best = value
        self._say(trial, f"epoch {result['epoch']}/{self.epochs} {self.metric}={value:.4g}")

    def _better(self, value: float) -> bool:
        # a callback pickled before `mode` existed was a maximising one
        return better(value, self.best, getattr(self, "mode", "max"))

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = (trial.last_result or {}).get("epoch", 0)
        self._say(trial, f"done after {epochs} epoch(s)" + (" (stopped early)" if epochs < self.epochs else "")
                  + "; " + self.progress(trials))

    def progress(self, trials) -> str:
        """'5/16 trials done, best objective 29.9 (chance 3.4), 2m10s, about 4m left'."""
        before = getattr(self, "done_before", 0)  # a callback pickled before it existed: 0
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1  # this one is not marked yet
        total = max(len(trials), self.total or 0)  # a searcher creates its trials as it goes
        elapsed = time.monotonic() - self.started
        if 0 < done < total:
            left = f", about {_duration(elapsed / done * (total - done))} left"
        else:
            left = ""
        done, total = done + before, total + before
        text = f"{done}/{total} trials done"
        if self.best is not None:
            text += f", best {self.metric} {self.best:.4g}" + (f" (chance {self.chance:.3g})" if self.chance else "")
        return text + f", {_duration(elapsed)}{left}"

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(trial, f"failed (failure {trial.num_failures}: {_reason(trial)}); retrying from its latest "
                         "checkpoint, if it has one")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(trial, f"errored after {trial.num_failures} failure(s) ({_reason(trial)}); the phase goes on")


def _reason(trial) -> str:
    """Why the trial's last attempt failed, in one line: from the driver's copy of its error.txt,
    written just now (trial.get_error() reads the storage's, synced later: one failure behind)."""
    from .trial_errors import error_line

    path = Path(trial.error_file) if trial.error_file else None
    return error_line(path.read_text(errors="replace") if path and path.is_file() else trial.get_error())


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class TrialHistory(Callback):
    """Every reported epoch of every trial, in the phase folder's history/ (results.py's
    format): the history the ranking, trials.csv and the report are built from.

    Tune's own progress.csv is not enough: when a trial is retried from a checkpoint, Tune
    copies the trial's progress.csv from storage over the driver's newer copy, and the storage
    copy is synced only every few seconds; an epoch reported just before the failure was then
    lost from the trial's history (seen as a retried trial that reached epoch 1 listed with 0
    epochs). These lines are appended as the results arrive and never copied back."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        append_history(self.folder, trial.trial_id, {k: v for k, v in result.items() if k != "config"})


class PruneFinished(Callback):
    """A finished trial (done, or stopped by ASHA) never resumes: drop the optimizer and loss
    state from its Tune checkpoint and keep best/model.pt. On the quick preset that is ~170 MB
    of ~230 MB per trial; errored trials keep theirs for --resume."""

    def on_trial_complete(self, iteration, trials, trial, **info):
        checkpoint = trial.checkpoint
        if checkpoint is not None:
            checkpoint.filesystem.delete_dir(f"{checkpoint.path}/{STATE_DIR}")


class DropSnapshotOlderCheckpoints(Callback):
    """Deletes a trial's older checkpoints only once Tune's experiment snapshot points past them.

    With Tune's own `num_to_keep=1`, a new checkpoint deleted the previous one at once, while
    the snapshot (what --resume restores) still named the previous one until it was next
    written: a driver killed in between left that trial unrestorable ("checkpoint does not
    exist on storage anymore") and it errored on resume. Tune writes a snapshot, then asks the
    callbacks for their state (`get_state`) and copies the snapshot to storage; so at each
    `get_state`, the checkpoints older than those the *previous* snapshot named (copied by now)
    can go. At the end of the phase every trial keeps only its latest."""

    def __init__(self):
        self._trials: dict[str, object] = {}
        self._named: dict[str, object] = {}  # trial id -> its checkpoint when the last snapshot was written

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._trials[trial.trial_id] = trial

    def get_state(self) -> dict | None:
        for trial_id, checkpoint in self._named.items():
            _delete_older_checkpoints(checkpoint)
        self._named = {trial_id: trial.checkpoint for trial_id, trial in self._trials.items()}
        return None  # nothing of ours to restore

    def on_experiment_end(self, trials, **info):
        # after Tune's last snapshot: every trial, also those a killed driver had finished
        for trial in trials:
            _delete_older_checkpoints(trial.checkpoint)


def _delete_older_checkpoints(latest) -> None:
    """The `checkpoint_NNNNNN` folders beside `latest` with a smaller number."""
    if latest is None:
        return
    from pyarrow.fs import FileSelector, FileType

    parent, name = latest.path.rstrip("/").rsplit("/", 1)
    try:
        for info in latest.filesystem.get_file_info(FileSelector(parent, allow_not_found=True)):
            if info.type == FileType.Directory and info.base_name.startswith("checkpoint_") and info.base_name < name:
                latest.filesystem.delete_dir(info.path)
    except OSError as exc:  # storage space is not worth a phase: say so and go on
        print(f"clipsearch: could not delete old checkpoints beside {latest.path}: {exc}", file=sys.stderr)
