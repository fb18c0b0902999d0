"""A trial's older checkpoints go only once the experiment snapshot no longer names them: a
driver killed at any moment leaves a snapshot whose checkpoints all exist (the kill loop of
`clipsearch bench reliability` found a trial lost to Tune's num_to_keep=1 deleting one early)."""

from types import SimpleNamespace

from ray.tune import Checkpoint

from clipsearch.tune.callbacks import DropSnapshotOlderCheckpoints


def checkpoints(trial_dir, *numbers):
    for n in numbers:
        (trial_dir / f"checkpoint_{n:06d}").mkdir(parents=True)
    return Checkpoint.from_directory(str(trial_dir / f"checkpoint_{max(numbers):06d}"))


def left(trial_dir):
    return sorted(p.name for p in trial_dir.iterdir())


def test_a_checkpoint_named_by_the_last_snapshot_survives_until_the_next_one(tmp_path):
    callback = DropSnapshotOlderCheckpoints()
    trial = SimpleNamespace(trial_id="a", checkpoint=checkpoints(tmp_path, 0))
    callback.on_checkpoint(0, [trial], trial, trial.checkpoint)
    callback.get_state()  # snapshot 1 names checkpoint 0
    trial.checkpoint = checkpoints(tmp_path, 1, 2)
    assert left(tmp_path) == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    callback.get_state()  # snapshot 2 names checkpoint 2; snapshot 1's checkpoint 0 must stay until it is stored
    assert left(tmp_path) == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    callback.get_state()  # snapshot 3: snapshot 2 (checkpoint 2) is stored, older ones go
    assert left(tmp_path) == ["checkpoint_000002"]


def test_at_the_end_each_trial_keeps_only_its_latest(tmp_path):
    callback = DropSnapshotOlderCheckpoints()
    restored = SimpleNamespace(trial_id="a", checkpoint=checkpoints(tmp_path / "a", 0, 1, 3))  # finished before a kill
    errored = SimpleNamespace(trial_id="b", checkpoint=None)
    callback.on_experiment_end([restored, errored])
    assert left(tmp_path / "a") == ["checkpoint_000003"]
