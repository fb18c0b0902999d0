"""Why a trial errored, as trials.csv and the driver's lines say it: Ray's out-of-memory kill
named as such with its figures, other errors by their exception; and a worker Ray killed (for
memory, with its node) failing its trial in Tune rather than stopping the phase. No cluster:
the texts are Ray 2.60's own (the reliability bench's out-of-memory trial), the exceptions
Ray's classes, and the method wrapped is Tune's own, called on stand-ins."""

from types import SimpleNamespace

import pytest

from clipsearch.tune.trial_errors import LIMIT, error_line

# what Tune kept of the bench's trial that Ray's memory monitor killed (trimmed: the object
# store's statistics and the advice paragraph)
RAY_OOM = """Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/_private/worker.py", line 1055, in get_objects
    raise value
ray.exceptions.OutOfMemoryError: 1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: 192.0.2.2, ID: aed4d6bd2550975f6290e5a8e60ce9ee9231b3adaf452c3c1f605072) was 5.66GB used / 23.54GB limit (0.240641)
OOM kill reason: Memory usage 6045425664B exceeded threshold of 6015682048B (23.8% of 25275973632B limit)
Object store memory usage: [- objects spillable: 1
Ray killed 1 worker(s) based on the killing policy
Selected to kill: (Actor(1a3ae49f24112a8ad51f4ca201000000): job ID=01000000, task name=ImplicitFunc.__init__, pid=19445, actual memory used=3.50GB, worker ID=7c6b2422343adf4f03a019fc885c96d4e8d89767ce43e2ea5cdcb746)
Top 10 memory users: PID	MEM(GB)	COMMAND
19445	3.50	ray::ImplicitFunc.train
"""


@pytest.mark.census("out of memory")
@pytest.mark.parametrize("wrapped", [False, True], ids=["as raised", "as Tune's actor error"])
def test_rays_memory_kill_is_out_of_memory_with_its_figures(wrapped):
    text = f"ray.exceptions.RayActorError: OutOfMemoryError: {RAY_OOM.split('OutOfMemoryError: ', 1)[1]}" \
        if wrapped else RAY_OOM
    line = error_line(text)
    assert line == ("out of memory: Ray's memory monitor killed the trial (the trial's worker used 3.50GB; the node "
                    "5.66GB of 23.54GB; above the kill threshold of 23.8% (RAY_memory_usage_threshold))")
    assert "\n" not in line


def test_another_error_is_its_last_exception_line_and_nothing_is_one_word():
    text = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: lr must be > 0\n\n"
    assert error_line(text) == "ValueError: lr must be > 0"
    assert error_line("something odd\nthe end\n") == "the end"
    assert error_line(None) == error_line("") == "error"
    assert len(error_line("RuntimeError: " + "x" * 2000)) == LIMIT


def _ray_classes():
    from ray.air.execution._internal.actor_manager import RayActorManager
    from ray.exceptions import NodeDiedError, OutOfMemoryError, RayActorError

    return RayActorManager, NodeDiedError, OutOfMemoryError, RayActorError


def _call(method, exception):
    """Tune's `_actor_task_failed` on stand-ins of its manager and task: what reached the actor's
    error callback."""
    seen = []
    actor = SimpleNamespace(actor_id="a1", _on_error=lambda tracked, exc: seen.append(exc))
    manager = SimpleNamespace(_failed_actor_ids=set(), _cleanup_actor=lambda tracked_actor: None)
    method(manager, SimpleNamespace(_tracked_actor=actor, _on_error=None), exception)
    return seen


@pytest.mark.parametrize("kind", [pytest.param("OutOfMemoryError", marks=pytest.mark.census("out of memory")),
                                  pytest.param("NodeDiedError", marks=pytest.mark.census("node lost"))])
def test_a_killed_worker_fails_its_trial_instead_of_stopping_tune(kind):
    from clipsearch.tune.actor_errors import tolerate_worker_kills

    manager, node_died, out_of_memory, actor_error = _ray_classes()
    exception = {"OutOfMemoryError": out_of_memory, "NodeDiedError": node_died}[kind]("the node ran low on memory")
    assert tolerate_worker_kills() and tolerate_worker_kills()  # once per process, however often asked
    original = manager._actor_task_failed.__wrapped__
    with pytest.raises(RuntimeError, match="Caught unexpected exception"):  # Ray 2.60's own: the phase stops
        _call(original, exception)
    seen = _call(manager._actor_task_failed, exception)
    assert len(seen) == 1 and isinstance(seen[0], actor_error)
    assert str(seen[0]) == f"{kind}: the node ran low on memory" and seen[0].__cause__ is exception
    assert manager._actor_task_failed.__wrapped__ is original  # wrapped once, not twice


def test_other_actor_errors_pass_through_unchanged():
    from clipsearch.tune.actor_errors import as_actor_error

    _, _, _, actor_error = _ray_classes()
    died, other = actor_error(error_msg="died"), ValueError("x")
    assert as_actor_error(died) is died and as_actor_error(other) is other


# what the driver printed when the reliability bench killed the raylet of a trial's node
RAY_NODE_LOST = ("The actor 9982a708e5810102618d681e01000000 is unavailable: "
                 "The actor is temporarily unavailable: RpcError: RPC error: Socket closed rpc_code: 14. The task may "
                 "or may not have been executed on the actor.")
RAY_ACTOR_DIED = ("Traceback (most recent call last):\n"
                  "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.")


@pytest.mark.census("node lost")
@pytest.mark.parametrize("text", [RAY_NODE_LOST, RAY_ACTOR_DIED])
def test_a_worker_or_node_ray_lost_is_named_as_such_with_rays_words(text):
    line = error_line(text)
    assert line.startswith("worker lost (its process or its node stopped): Ray said ")
    assert text.splitlines()[-1] in line
    mine = "ValueError: the actor is unavailable in my data"  # the trainable's own words are its own
    assert error_line(mine) == mine


def test_the_reason_is_the_last_attempts():
    text = f"Failure # 1 (occurred at 2026-12-02_05-48-18)\n{RAY_OOM}\nFailure # 2 (occurred at 2026-12-02_05-48-34)\n" \
           "Traceback (most recent call last):\nValueError: lr must be > 0\n"
    assert error_line(text) == "ValueError: lr must be > 0"


@pytest.mark.census("out of memory")
def test_a_trial_errored_by_its_actors_death_goes_into_tunes_next_snapshot():
    """Tune marks a trial for its snapshot only while its actor is tracked; a dead actor's is not
    (Tune's own method runs here on stand-ins: it errors the trial, and the wrapper marks it)."""
    from ray.tune.execution.tune_controller import TuneController

    from clipsearch.tune.actor_errors import tolerate_worker_kills

    assert tolerate_worker_kills()
    marked, stopped = [], []
    trial = SimpleNamespace(status="RUNNING", handle_error=lambda exc: None, should_recover=lambda: False,
                            trial_id="t1")
    noop = SimpleNamespace(on_trial_error=lambda *a, **k: None, on_trial_complete=lambda *a, **k: None)
    controller = SimpleNamespace(_has_errored=False, _iteration=0, _trials=[trial], _scheduler_alg=noop,
                                 _search_alg=noop, _callbacks=noop, _mark_trial_to_checkpoint=marked.append,
                                 _schedule_trial_stop=lambda t, exception=None: stopped.append(t))
    TuneController._process_trial_failure.__wrapped__(controller, trial, RuntimeError("x"))
    assert stopped == [trial] and marked == []  # Tune's own: stopped, not marked (its actor was gone)
    TuneController._process_trial_failure(controller, trial, RuntimeError("x"))
    assert marked == [trial]
