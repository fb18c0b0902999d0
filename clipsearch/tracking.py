"""MLflow bookkeeping for searches: an experiment per EXP, a parent run per phase, a child run
per trial. Kept out of the library core (config, data, models, losses, optim, metrics, train),
which never imports MLflow.

Runs are found again by tags rather than remembered, so that a phase resumed after its driver
was killed keeps its parent run and each trial's child run:
- parent: tags clipsearch.phase = PHASE, clipsearch.experiment = EXP
- child: tags mlflow.parentRunId = the parent's id (MLflow's own nesting), clipsearch.trial_id

Every run ends FINISHED, FAILED or KILLED. A driver killed mid-phase leaves its runs RUNNING;
`close_running` marks them KILLED when the phase is resumed (the child runs of trials that go
on are reopened by `trial_run` when those trials start again).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PHASE_TAG, EXPERIMENT_TAG, TRIAL_TAG = "clipsearch.phase", "clipsearch.experiment", "clipsearch.trial_id"
PARENT_TAG = "mlflow.parentRunId"
_MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def default_tracking_uri(results_dir: Path) -> str:
    """sqlite:///<absolute results dir>/mlflow.db: one store for every experiment."""
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store go beside its database (MLflow's default is ./mlruns under
    whatever directory the command ran in); a server decides for itself."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db = Path(uri[len("sqlite:///"):])
    return (db.parent / "mlartifacts").resolve().as_uri()


def experiment_id(mlflow_client, uri: str, name: str) -> str:
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return mlflow_client.create_experiment(name, artifact_location=_artifact_location(uri))


def find_runs(mlflow_client, exp_id: str, **tags: str) -> list:
    """Runs of the experiment carrying every tag given (keyword names use _ for .)."""
    clauses = [f"tags.`{_tag(k)}` = '{v}'" for k, v in tags.items()]
    return mlflow_client.search_runs([exp_id], filter_string=" and ".join(clauses), max_results=10000)


def _tag(keyword: str) -> str:
    return {"phase": PHASE_TAG, "experiment": EXPERIMENT_TAG, "trial": TRIAL_TAG, "parent": PARENT_TAG}[keyword]


def phase_run(mlflow_client, exp_id: str, experiment: str, phase: str, params: dict[str, Any],
              run_id: str | None = None) -> str:
    """The phase's parent run: `run_id` reopened (a resumed phase), or a new one."""
    if run_id is not None:
        mlflow_client.update_run(run_id, status="RUNNING")
        return run_id
    run = mlflow_client.create_run(exp_id, run_name=phase, tags={PHASE_TAG: phase, EXPERIMENT_TAG: experiment})
    log_params(mlflow_client, run.info.run_id, params)
    return run.info.run_id


def trial_run(mlflow_client, exp_id: str, parent_id: str, trial_id: str, params: dict[str, Any]) -> str:
    """A trial's child run: found by its tags and reopened (a retried or resumed trial), or new."""
    found = find_runs(mlflow_client, exp_id, parent=parent_id, trial=trial_id)
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            mlflow_client.update_run(run_id, status="RUNNING")
        return run_id
    run = mlflow_client.create_run(exp_id, run_name=trial_id, tags={PARENT_TAG: parent_id, TRIAL_TAG: trial_id})
    log_params(mlflow_client, run.info.run_id, params)
    return run.info.run_id


def log_params(mlflow_client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items() if v is not None]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(mlflow_client, run_id: str, metrics: dict[str, Any], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for i in range(0, len(items), 1000):
        mlflow_client.log_batch(run_id, metrics=items[i:i + 1000])


def close_running(mlflow_client, exp_id: str, parent_id: str, status: str = "KILLED") -> int:
    """End the parent's child runs still RUNNING; returns how many there were."""
    stale = [r for r in find_runs(mlflow_client, exp_id, parent=parent_id) if r.info.status == "RUNNING"]
    for run in stale:
        mlflow_client.set_terminated(run.info.run_id, status=status)
    return len(stale)


def end_run(mlflow_client, run_id: str, status: str) -> None:
    mlflow_client.set_terminated(run_id, status=status)
