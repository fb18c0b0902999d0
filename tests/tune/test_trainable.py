"""What a trial resumes from (no cluster needed)."""

import pytest
from ray import tune

from clipsearch.tune import trainable
from clipsearch.tune.trainable import FINISHED, _restore_latest


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
