"""Ray Tune's OptunaSearch, made safe against a driver killed at the wrong moment.

Two records of the same search are written at different times: Optuna writes every result
and every `tell` to its study (results/EXP/PHASE/optuna.db) at once, while Tune snapshots its
trials and the searcher's state only every few seconds. A driver killed between the two
leaves a trial that Optuna has already finished but that Tune's snapshot still shows running.
`Tuner.restore` then runs that trial on from its checkpoint, and the stock searcher reports its
next epoch to the finished Optuna trial, which raises `UpdateFinishedTrialError` and ends the
whole resumed phase. Ray's OptunaSearch has no hook for this, so clipsearch overrides the two
callbacks: a trial that Optuna already finished keeps the value it was told, and the resumed
run's reports are not told again.
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch whose result and completion callbacks skip trials the study already finished."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._finished_in_study(trial_id):
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._finished_in_study(trial_id):
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)

    def _finished_in_study(self, trial_id: str) -> bool:
        """True when the Optuna trial behind this Tune trial is finished in the study's storage
        (not in the searcher's in-memory copy, which a restore brings back from before the kill)."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        # Trial objects carry no public handle on their stored state; the study's storage is the
        # authority a restored searcher must ask.
        stored = self._ot_study._storage.get_trial(ot_trial._trial_id)
        return stored.state.is_finished()
