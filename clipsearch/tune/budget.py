"""A phase's budgets beyond its trial count: wall time and epochs.

- time (`budget: {minutes: M}` or `time_budget_s`): Ray's TuneConfig(time_budget_s=...), which
  stops every trial once the run has lasted that long. It counts the run of one command: a
  resumed or extended phase gets its time budget again (Ray restarts its clock on a restore).
- epochs (`budget: {epochs: E}`): full-data epochs over every trial of the phase, a trial's
  epochs x its data.fraction (an epoch on 20% of the pairs is a fifth of one), as bench search
  counts them. EpochBudget, a Tune Stopper, stops every trial once they are spent; it counts
  the phase's history/ too, so a resumed phase goes on from what it had spent.

Either way the trials it stops end TERMINATED with the epochs they reached (ranked as usual,
an unfinished one below those that ran further), Optuna is told they were pruned, and the phase
writes its files as at any end, with one line on stderr saying which budget stopped it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.stopper import Stopper

from ..config import flatten
from ..results import TrialRecord, read_histories


class EpochBudget(Stopper):
    """Stops the experiment once the trials' epochs x data.fraction reach `epochs`.

    history_dir: the phase's history/ (the epochs of trials reported before a resume);
    fraction: data.fraction of a trial whose result does not carry its config."""

    def __init__(self, epochs: float, history_dir: str | Path, fraction: float):
        self.epochs, self.history_dir, self.fraction = float(epochs), str(history_dir), float(fraction)
        self._reached: dict[str, tuple[int, float]] | None = None  # trial -> (its last epoch, its fraction)

    def __getstate__(self) -> dict:
        # pickled with the experiment: a restored run counts again from history/
        return {**self.__dict__, "_reached": None}

    def __call__(self, trial_id: str, result: dict) -> bool:
        reached = self._counts()
        fraction = flatten(result.get("config") or {}).get("data.fraction", self.fraction)
        epoch = int(result.get("epoch", 0))
        if epoch > reached.get(trial_id, (0, fraction))[0]:
            reached[trial_id] = (epoch, float(fraction))
        return False  # the trial itself goes on: stop_all ends them all together

    def stop_all(self) -> bool:
        return self.spent() >= self.epochs

    def spent(self) -> float:
        return sum(epoch * fraction for epoch, fraction in self._counts().values())

    def _counts(self) -> dict[str, tuple[int, float]]:
        if self._reached is None:
            self._reached = {}
            for trial_id, rows in read_histories(Path(self.history_dir)).items():
                epochs = [int(row["epoch"]) for row in rows if isinstance(row.get("epoch"), (int, float))]
                if epochs:
                    self._reached[trial_id] = (max(epochs), self.fraction)
        return self._reached


def epochs_spent(records: list[TrialRecord], fraction: float) -> float:
    """Full-data epochs the trials trained: each one's last epoch x its data.fraction."""
    return sum(r.reach * float(r.config.get("data.fraction", fraction)) for r in records)


def budget_stop(budget: dict[str, float], records: list[TrialRecord], fraction: float,
                run_seconds: float) -> dict[str, Any] | None:
    """Which budget ended the run, and what was spent ({"budget", "spent", "limit"}); None when
    the run ended without reaching one."""
    if "epochs" in budget:
        spent = epochs_spent(records, fraction)
        if spent >= budget["epochs"]:
            return {"budget": "epochs", "spent": round(spent, 3), "limit": budget["epochs"]}
    if "time_budget_s" in budget and run_seconds >= budget["time_budget_s"]:
        return {"budget": "time", "spent": round(run_seconds, 1), "limit": budget["time_budget_s"]}
    return None


def budget_line(phase: str, stop: dict[str, Any], trials: int) -> str:
    """'phase1: stopped by its epoch budget: 40.6 of 40 full-data epochs spent ...; 9 trial(s) ran'"""
    if stop["budget"] == "epochs":
        spent = (f"{stop['spent']:g} of {stop['limit']:g} full-data epochs spent "
                 f"(each trial's epochs x its data.fraction)")
    else:
        spent = f"{_minutes(stop['spent'])} of {_minutes(stop['limit'])} spent"
    which = {"epochs": "epoch", "time": "time"}[stop["budget"]]
    return (f"{phase}: stopped by its {which} budget: {spent}; {trials} trial(s) ran, those it cut "
            f"end TERMINATED with the epochs they reached")


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"
