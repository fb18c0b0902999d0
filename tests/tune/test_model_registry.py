"""The model a search ends with, in MLflow's registry (clipsearch.tune.model_registry): logged
into the phase's parent run, registered under the experiment's name, its version tagged with
the metrics and config; a store that is down costs one line, never the search."""

import json
import re

import pytest
import torch

from clipsearch import tracking
from clipsearch.provenance import GIT_COMMIT_TAG, code_version
from clipsearch.tune import model_registry

BEST = {"phase": "phase1", "experiment": "exp", "metric": "objective", "trial_id": "t_00001", "score": 12.5,
        "best_epoch": 2, "best_metrics": {"epoch": 2, "objective": 12.5, "tr1": 3.0, "ir1": 4.0, "acc1": 30.5},
        "decided": {"optimizer.lr": 0.003, "loss.name": "sogclr"}, "config": {"optimizer.lr": 0.003},
        "resolved_config": {"optimizer.lr": 0.003, "loss.name": "sogclr", "train.epochs": 2}, "checkpoint": "x"}


def lay_down_phase(results, uri: str) -> tuple:
    """results/exp/phase1 with phase.json and best.json, its parent run FINISHED in the store."""
    client = tracking.client(uri)
    exp = tracking.experiment_id(client, uri, "exp")
    parent = tracking.phase_run(client, exp, "exp", "phase1", {"space": "s.yaml"})
    tracking.end_run(client, parent, "FINISHED")
    folder = results / "exp" / "phase1"
    folder.mkdir(parents=True)
    (folder / "best.json").write_text(json.dumps(BEST))
    (folder / "phase.json").write_text(json.dumps({"experiment": "exp", "phase": "phase1", "tracking_uri": uri,
                                                   "parent_run_id": parent, "base": {}}))
    return folder, client, parent


def tiny_model(state, best):
    """In place of the quick preset's 60 MB dual encoder: the registry does not care what it holds."""
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).eval()


def test_the_best_model_is_registered_under_the_experiment_from_its_phases_run(tmp_path, monkeypatch):
    import mlflow.pytorch

    monkeypatch.setattr(model_registry, "best_model", tiny_model)
    uri = tracking.default_tracking_uri(tmp_path / "results")
    folder, client, parent = lay_down_phase(tmp_path / "results", uri)
    assert model_registry.register_best_model(folder) == "1"
    version = client.get_model_version("exp", "1")
    assert version.run_id == parent and client.get_run(parent).info.status == "FINISHED"
    tags = version.tags
    assert tags["metric.objective"] == "12.5" and tags["metric.acc1"] == "30.5" and "metric.epoch" not in tags
    assert tags["config.optimizer.lr"] == "0.003" and tags["config.loss.name"] == "sogclr"
    assert json.loads(tags["clipsearch.resolved_config"]) == BEST["resolved_config"]
    assert tags["clipsearch.trial_id"] == "t_00001" and tags["clipsearch.best_epoch"] == "2"
    assert {k: tags[k] for k in code_version()} == code_version()
    assert "trial t_00001 at epoch 2, objective 12.5" in version.description and parent in version.description
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(uri):  # the process-wide URI, put back for the tests after this one
        loaded = mlflow.pytorch.load_model("models:/exp/1")
    assert torch.equal(loaded.weight, tiny_model(None, None).weight)


def test_a_phase_kept_by_resume_registers_its_best_once_and_a_new_best_as_a_new_version(tmp_path, monkeypatch,
                                                                                        capsys):
    monkeypatch.setattr(model_registry, "best_model", tiny_model)
    uri = tracking.default_tracking_uri(tmp_path / "results")
    folder, client, _ = lay_down_phase(tmp_path / "results", uri)
    assert model_registry.register_best_model(folder) == "1"
    capsys.readouterr()
    assert model_registry.register_best_model(folder) == "1"  # the same phase, the same best: kept
    said = capsys.readouterr().err
    assert "best model (trial t_00001, epoch 2) already registered in MLflow as 'exp' version 1" in said
    assert [str(v.version) for v in client.search_model_versions("name = 'exp'")] == ["1"]
    (folder / "best.json").write_text(json.dumps({**BEST, "trial_id": "t_00007"}))  # extended: a new best
    assert model_registry.register_best_model(folder) == "2"


def test_a_store_that_is_down_costs_one_line_and_registers_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(model_registry, "best_model", tiny_model)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    folder, _, parent = lay_down_phase(tmp_path / "results", tracking.default_tracking_uri(tmp_path / "results"))
    state = json.loads((folder / "phase.json").read_text())
    (folder / "phase.json").write_text(json.dumps({**state, "tracking_uri": "http://127.0.0.1:9"}))  # nothing listens
    capsys.readouterr()
    assert model_registry.register_best_model(folder) is None
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "phase1's best model (registered model 'exp'" in lines[0] and "not logged" in lines[0]


def test_a_phase_without_a_best_trial_registers_nothing(tmp_path, monkeypatch):
    def never(state, best):
        raise AssertionError("no model to build")

    monkeypatch.setattr(model_registry, "best_model", never)
    folder, _, _ = lay_down_phase(tmp_path / "results", tracking.default_tracking_uri(tmp_path / "results"))
    (folder / "best.json").unlink()  # every trial errored
    assert model_registry.register_best_model(folder) is None


@pytest.mark.slow
def test_a_phase_run_on_its_own_leaves_runs_with_code_and_data_and_a_registered_model(finished_quick_phase):
    """`clipsearch phase1 --quick` end to end on two tiny trials (the suite's finished phase,
    tests/conftest.py): the parent and child runs carry the code's version and the embedded data
    sets, and the best epoch is registered model 'demo' v1."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    import mlflow.pytorch

    from clipsearch.models import DualEncoder, trainable_state

    from .helpers import mlflow_runs

    root, out = finished_quick_phase
    assert "phase1: best model (trial " in out.stderr and "registered in MLflow as 'demo' version 1" in out.stderr
    runs = mlflow_runs(root / "results", "demo")
    parent = next(r for r in runs if r.info.run_name == "phase1")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    versions = {k: v for k, v in code_version().items() if k.endswith(".version")}
    for run in (parent, *children):
        assert {k: run.data.tags[k] for k in versions} == versions
        if GIT_COMMIT_TAG in code_version():  # HEAD of the checkout when the command ran (it may move on since)
            assert re.fullmatch("[0-9a-f]{40}", run.data.tags[GIT_COMMIT_TAG])
        assert {i.dataset.name for i in run.inputs.dataset_inputs} == {
            "embedded:mnist5000-captions", "embedded:mnist5000-heldout1000", "embedded:sklearn-digits-8x8"}
    uri = f"sqlite:///{root / 'results' / 'mlflow.db'}"
    version = tracking.client(uri).get_model_version("demo", "1")
    best = json.loads((root / "results" / "demo" / "phase1" / "best.json").read_text())
    assert version.run_id == parent.info.run_id and version.tags["clipsearch.trial_id"] == best["trial_id"]
    assert float(version.tags["metric.objective"]) == pytest.approx(best["score"], rel=1e-5)
    with _use_tracking_uri(uri):
        model = mlflow.pytorch.load_model("models:/demo/1")
    saved = torch.load(f"{best['checkpoint']}/best/model.pt", map_location="cpu", weights_only=True)["model"]
    assert isinstance(model, DualEncoder)
    assert all(torch.equal(value, saved[key]) for key, value in trainable_state(model).items())
