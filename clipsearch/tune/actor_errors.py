"""A trial whose worker Ray killed (out of memory, its node lost) fails that trial, not the phase.

Ray 2.60 raises `ray.exceptions.OutOfMemoryError` from an actor's pending task when its memory
monitor kills the actor's worker, and `NodeDiedError` when the actor's node is gone. Both are
plain `RayError`s, neither `RayActorError` nor `RayTaskError`, and Tune's actor manager
(`RayActorManager._actor_task_failed`) treats any other exception as its own bug: it raises
`RuntimeError: Caught unexpected exception: ...` out of `Tuner.fit()`, and the whole phase
stops (exit 1, a traceback, no trials.csv) over one trial that grew too large. Seen with the
reliability bench's out-of-memory trial (clipsearch.bench.oom).

`tolerate_worker_kills()` makes Tune see those errors as what they are, the death of the
trial's actor: a `RayActorError` carrying Ray's message, so the trial fails, is retried from its
checkpoint (FailureConfig.max_failures), and errors with that message once its retries are
spent (trial_errors.error_line then says "out of memory: ..."). It also wraps
`TuneController._process_trial_failure` so that a trial errored that way is written into Tune's
next experiment snapshot: Tune marks a stopped trial for the snapshot only while its actor is
still tracked, and a dead actor's is not, so trials.csv (read from the snapshot) listed a trial
that had errored after its retries as RUNNING with one failure fewer, and the phase ended
"interrupted". Private methods, wrapped once per process; if a Ray release renames them, nothing
is wrapped and a warning says so.
"""

from __future__ import annotations

import functools
import warnings

_WRAPPED = "_clipsearch_tolerates_worker_kills"


def as_actor_error(exception: BaseException) -> BaseException:
    """A RayActorError with `exception`'s message for the errors that mean the actor's worker
    was killed (OutOfMemoryError, NodeDiedError); any other exception as it is."""
    from ray.exceptions import NodeDiedError, OutOfMemoryError, RayActorError

    if isinstance(exception, (OutOfMemoryError, NodeDiedError)):
        error = RayActorError(error_msg=f"{type(exception).__name__}: {exception}")
        error.__cause__ = exception
        return error
    return exception


def tolerate_worker_kills() -> bool:
    """Wrap Tune's actor manager and controller (see the module); True once wrapped, False (and
    a warning) where this Ray has no such methods."""
    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.tune.execution.tune_controller import TuneController

    failed = getattr(RayActorManager, "_actor_task_failed", None)
    failure = getattr(TuneController, "_process_trial_failure", None)
    if failed is None or failure is None or not hasattr(TuneController, "_mark_trial_to_checkpoint"):
        warnings.warn("clipsearch: this Ray's Tune has no RayActorManager._actor_task_failed or "
                      "TuneController._process_trial_failure; a trial killed for memory or with its node may stop "
                      "the whole phase", RuntimeWarning, stacklevel=2)
        return False
    if getattr(failed, _WRAPPED, False):
        return True

    @functools.wraps(failed)
    def _actor_task_failed(self, tracked_actor_task, exception):
        return failed(self, tracked_actor_task, as_actor_error(exception))

    @functools.wraps(failure)
    def _process_trial_failure(self, trial, exception):
        failure(self, trial, exception)
        self._mark_trial_to_checkpoint(trial)  # its new status and failure count, into the snapshot

    for owner, name, wrapper in ((RayActorManager, "_actor_task_failed", _actor_task_failed),
                                 (TuneController, "_process_trial_failure", _process_trial_failure)):
        setattr(wrapper, _WRAPPED, True)
        setattr(owner, name, wrapper)
    return True
