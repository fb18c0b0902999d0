"""What a trial resumes from, and the test-only fault hook (no cluster needed)."""

import pytest
from ray import tune

from clipsearch.tune import trainable
from clipsearch.tune.trainable import FINISHED, InjectedFault, _fault_hook, _restore_latest


@pytest.fixture
def latest(monkeypatch, tmp_path):
    """Make tune.get_checkpoint() return a checkpoint folder the test fills."""
    folder = tmp_path / "tune_checkpoint"
    (folder / "best").mkdir(parents=True)
    (folder / "best" / "model.pt").write_bytes(b"weights")
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(folder)))
    return folder


def test_a_trial_resumes_from_the_state_in_its_latest_checkpoint(latest, tmp_path):
    (latest / "checkpoint").mkdir()
    (latest / "checkpoint" / "state.pt").write_bytes(b"state")
    run_dir = tmp_path / "run"
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "best" / "model.pt").write_bytes(b"newer, from a failed attempt")
    assert _restore_latest(run_dir) == run_dir / "checkpoint"
    assert (run_dir / "best" / "model.pt").read_bytes() == b"weights"  # the checkpoint's, not the attempt's


def test_a_pruned_checkpoint_means_the_trial_had_finished(latest, tmp_path):
    assert _restore_latest(tmp_path / "run") is FINISHED


def test_a_fresh_trial_starts_from_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
    assert _restore_latest(tmp_path / "run") is None


def test_fault_rules_pick_trials_by_config_and_fail_after_the_epoch(monkeypatch):
    monkeypatch.setenv(trainable.FAULT_ENV, "optimizer.name=radam@1;train.epochs=1@0")
    radam = _fault_hook({"optimizer.name": "radam", "train.epochs": 2})
    radam(1)
    with pytest.raises(InjectedFault, match="epoch 2"):
        radam(2)
    with pytest.raises(InjectedFault):
        _fault_hook({"optimizer.name": "adamw", "train.epochs": 1})(1)
    _fault_hook({"optimizer.name": "adamw", "train.epochs": 2})(5)  # no rule matches
