"""Ray Tune's OptunaSearch, made safe against a driver killed at the wrong moment, and honest
about the trials ASHA stops.

Two records of the same search are written at different times: Optuna writes every result
and every `tell` to its study (the experiment's storage, results/EXP/optuna.db) at once, while Tune snapshots its
trials and the searcher's state only every few seconds. A driver killed between the two
leaves a trial that Optuna has already finished but that Tune's snapshot still shows running.
`Tuner.restore` then runs that trial on from its checkpoint, and the stock searcher reports its
next epoch to the finished Optuna trial, which raises `UpdateFinishedTrialError` and ends the
whole resumed phase. Ray's OptunaSearch has no hook for this, so clipsearch overrides the two
callbacks: a trial that Optuna already finished keeps the value it was told, and the resumed
run's reports are not told again.

The stock searcher also tells Optuna every trial that ends without an error as COMPLETE, a
trial ASHA stopped after its first epoch included, with that epoch's value: TPE then models a
1-epoch score as if it were a finished run's. Given the trials' budget (`max_epochs`, the
phase's train.epochs), a trial that ends before it is told PRUNED, with the values of the
epochs it ran; TPE ranks pruned trials by the last epoch they reached, then by the value
there, below every complete one: the order of clipsearch's ranking (clipsearch/results/ranking.py). Each
epoch is reported at step = its epoch (not training_iteration, which a restored trial may
count differently).

Optuna also draws configurations the study has already run: on a space of choices (a phase 1 of
3 losses x 3 optimizers x 2 learning rates) TPE drew the same cell twice in 5 trials, in 2 of 5
search seeds of `clipsearch bench search`. Every trial trains with the config's seed, so a
second run of a cell learns nothing and spends a trial's budget. A draw whose parameters equal
those of a trial the study ran, or is running, is told FAIL (TPE leaves failed trials out of its
model; the trial's user attribute `clipsearch.duplicate_of` names the twin) and drawn again at
random (Optuna's RandomSampler, seeded by the trial's number): TPE, given the same history,
proposes the same cell again (it did 25 times in a row on that space), up to MAX_REDRAWS times;
a space with nothing new left then runs the last draw.
"""

from __future__ import annotations

import contextlib
import logging
import math

from optuna.samplers import RandomSampler
from optuna.trial import TrialState
from ray.air.constants import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from ..results import best_of

logger = logging.getLogger(__name__)

#: draws of one suggestion before a duplicate is run anyway (the space is then all but exhausted)
MAX_REDRAWS = 25
#: the trials a new draw must not repeat: those run, being run, or stopped by ASHA
_DONE_OR_RUNNING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch whose result and completion callbacks skip trials the study already
    finished, and which tells a trial stopped before `max_epochs` PRUNED.

    max_epochs: the epochs every trial is given (None: no trial is judged early-stopped).
    The other arguments are OptunaSearch's; `points_to_evaluate` (phase 3: phase 2's best) are
    enqueued in the study when it is created, and are its first trials.
    """

    _max_epochs: int | None = None  # a class default: a searcher pickled before it existed restores too

    def __init__(self, *args, max_epochs: int | None = None, **kwargs):
        self._max_epochs = max_epochs
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        for _ in range(MAX_REDRAWS):
            twin = self._twin(self._ot_trials[trial_id])
            if twin is None:
                break
            duplicate = self._ot_trials.pop(trial_id)
            duplicate.set_user_attr("clipsearch.duplicate_of", twin.number)
            self._tell(duplicate, state=TrialState.FAIL)
            with self._drawing_at_random(seed=duplicate.number):
                params = super().suggest(trial_id)
        return params

    @contextlib.contextmanager
    def _drawing_at_random(self, seed: int):
        """The study's sampler swapped for a seeded RandomSampler for one draw."""
        study = self._ot_study
        sampler, study.sampler = study.sampler, RandomSampler(seed=seed)
        try:
            yield
        finally:
            study.sampler = sampler

    def _twin(self, ot_trial):
        """A trial of the study, other than `ot_trial`, drawn with exactly its parameters and
        run, running or pruned; None when there is none."""
        params = ot_trial.params
        for other in self._ot_study.get_trials(deepcopy=False, states=_DONE_OR_RUNNING):
            if other.number != ot_trial.number and other.params == params:
                return other
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._finished_in_study(trial_id):
            return
        super().on_trial_result(trial_id, {**result, TRAINING_ITERATION: _epoch(result)})

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._finished_in_study(trial_id):
            self._completed_trials.add(trial_id)
            return
        value = (result or {}).get(self.metric)
        if error or value is None or trial_id in self._completed_trials or isinstance(self.metric, list):
            # FAIL, PRUNED without a result, or Ray's warning about a second completion
            super().on_trial_complete(trial_id, result, error)
            return
        ot_trial = self._ot_trials[trial_id]
        epoch = _epoch(result)
        # Tune hands the result that ends a trial (ASHA's stop, the budget's last epoch) to
        # on_trial_complete only: without this, the study would miss the trial's last epoch
        if epoch not in self._stored(ot_trial).intermediate_values:
            ot_trial.report(value, epoch)
        if self._max_epochs is not None and epoch < self._max_epochs:
            # Optuna makes the last reported value a pruned trial's value
            self._tell(ot_trial, state=TrialState.PRUNED)
        else:
            # no state: Optuna tells a non-finite value FAIL rather than COMPLETE
            self._tell(ot_trial, _best(self._stored(ot_trial).intermediate_values.values(), value, self._mode))
        self._completed_trials.add(trial_id)

    def _tell(self, ot_trial, value: float | None = None, state: TrialState | None = None) -> None:
        try:
            self._ot_study.tell(ot_trial, value, state=state)
        except Exception as exc:  # as OptunaSearch does: a searcher's callback must not end the phase
            logger.warning(exc)

    def _finished_in_study(self, trial_id: str) -> bool:
        """True when the Optuna trial behind this Tune trial is finished in the study's storage
        (not in the searcher's in-memory copy, which a restore brings back from before the kill)."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        return self._stored(ot_trial).state.is_finished()

    def _stored(self, ot_trial):
        # Trial objects carry no public handle on their stored state; the study's storage is the
        # authority a restored searcher must ask.
        return self._ot_study._storage.get_trial(ot_trial._trial_id)


def _epoch(result: dict) -> int:
    """The epoch train() reports with every result (training_iteration where a result has none)."""
    return int(result["epoch"] if "epoch" in result else result[TRAINING_ITERATION])


def _best(values, last: float, mode: str = "max") -> float:
    """A complete trial's value for Optuna: its best epoch's (the highest, or the lowest under
    mode min), the score clipsearch ranks it by (ranking.TrialRecord.score) and the epoch whose
    weights it keeps, so that the study's best trial is best.json's. (Every complete trial ran
    the same epochs; a pruned one's value is its last epoch's, which is what TPE and ASHA compare
    it by.)"""
    finite = [v for v in values if math.isfinite(v)]
    return best_of(finite, mode) if finite else last
