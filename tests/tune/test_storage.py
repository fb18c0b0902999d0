"""--storage: where Ray Tune keeps a phase's trials. A shared path or a URI, each phase under
STORAGE/NAME/PHASE; the default keeps it beside the phase's files. (A search on a two-node
cluster with a file:// URI: test_cluster.py.)"""

from pathlib import Path

from clipsearch.tune.phases import Options, _storage_path


def storage(tmp_path: Path, given: str | None) -> str:
    return _storage_path(Options(name="exp", storage=given), tmp_path / "results" / "exp" / "phase1")


def test_by_default_trials_stay_beside_the_phase(tmp_path):
    assert storage(tmp_path, None) == str(tmp_path / "results" / "exp" / "phase1")


def test_a_relative_shared_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Tune refuses a relative storage_path
    assert storage(tmp_path, "nfs/ray") == str(tmp_path / "nfs" / "ray" / "exp" / "phase1")


def test_a_uri_is_kept_as_given_with_the_experiment_and_phase_below(tmp_path):
    assert storage(tmp_path, "s3://bucket/clipsearch/") == "s3://bucket/clipsearch/exp/phase1"
    assert storage(tmp_path, "file:///mnt/shared") == "file:///mnt/shared/exp/phase1"
