"""--storage: where Ray Tune keeps a phase's trials. A shared path or a URI, each phase under
STORAGE/NAME/PHASE; the default keeps it beside the phase's files. (A search on a two-node
cluster with a file:// URI: test_cluster.py.)"""

from pathlib import Path

from clipsearch.tune.phases import Options, storage_path


def storage(tmp_path: Path, given: str | None) -> str:
    return storage_path(Options(name="exp", storage=given), tmp_path / "results" / "exp" / "phase1")


def test_by_default_trials_stay_beside_the_phase(tmp_path):
    assert storage(tmp_path, None) == str(tmp_path / "results" / "exp" / "phase1")


def test_a_relative_shared_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Tune refuses a relative storage_path
    assert storage(tmp_path, "nfs/ray") == str(tmp_path / "nfs" / "ray" / "exp" / "phase1")


def test_a_uri_is_kept_as_given_with_the_experiment_and_phase_below(tmp_path):
    assert storage(tmp_path, "s3://bucket/clipsearch/") == "s3://bucket/clipsearch/exp/phase1"
    assert storage(tmp_path, "file:///mnt/shared") == "file:///mnt/shared/exp/phase1"


def test_a_checkpoint_on_remote_storage_is_recorded_as_a_uri_that_opens_again():
    """best.json's checkpoint is opened again with tune.Checkpoint(location) (the best model is
    logged to MLflow from it): on s3:// storage Checkpoint.path alone has lost the bucket's scheme."""
    import pyarrow.fs
    from ray import tune

    from clipsearch.tune.runner import checkpoint_location

    local = tune.Checkpoint("/shared/exp/phase1/ray/trial_1/checkpoint_000001")
    assert checkpoint_location(local) == "/shared/exp/phase1/ray/trial_1/checkpoint_000001"
    s3 = tune.Checkpoint("bucket/exp/phase1/ray/trial_1/checkpoint_000001",
                         filesystem=pyarrow.fs.S3FileSystem(anonymous=True, region="us-east-1"))
    assert checkpoint_location(s3) == "s3://bucket/exp/phase1/ray/trial_1/checkpoint_000001"
    remote = tune.Checkpoint("gs://bucket/exp/phase1/ray/trial_1/checkpoint_000001")  # no network needed
    again = tune.Checkpoint(checkpoint_location(remote))
    assert (again.filesystem.type_name, again.path) == ("gcs", "bucket/exp/phase1/ray/trial_1/checkpoint_000001")
    assert checkpoint_location(None) is None


def test_the_best_trials_weights_are_read_the_same_way_from_a_path_and_a_uri(tmp_path):
    """One reader (runner.best_model_weights) for MLflow's artifact, classify's test scores and
    supcon's ranking: a file:// URI stands in for a bucket (it goes through Tune's download path)."""
    import pytest
    import torch

    from clipsearch.results import RunFolder
    from clipsearch.tune.runner import best_model_file, best_model_weights

    checkpoint = tmp_path / "ray" / "trial_1" / "checkpoint_000003"
    RunFolder(checkpoint).best_model.parent.mkdir(parents=True)
    torch.save({"model": {"w": torch.arange(3.0)}}, RunFolder(checkpoint).best_model)
    for location in (str(checkpoint), f"file://{checkpoint}"):
        assert torch.equal(best_model_weights({"checkpoint": location})["w"], torch.arange(3.0))
    with best_model_file({"checkpoint": None}) as none:
        assert none is None
    empty = tmp_path / "ray" / "trial_2" / "checkpoint_000001"
    empty.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="best/model.pt"):
        best_model_weights({"checkpoint": str(empty)})
