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

Every new run carries the code's version as tags (clipsearch.provenance.code_version:
mlflow.source.git.commit from a git checkout, clipsearch.version, torch.version, ray.version)
and, where given, its data sets as dataset inputs (`log_datasets`: an mlflow.data MetaDataset
per source, its context in the input tag mlflow.data.context). What is logged beside the runs
(dataset inputs, a model) never stops a phase: a store that refuses it gets one line on stderr
saying what was not logged (`not_logged`).

While a phase runs, the driver's calls go through the phase's outbox (clipsearch.tracking_outbox),
which queues what a store that does not answer (`store_unreachable`) could not take and replays
it when the store answers again; the calls it makes fail fast (`fail_fast`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from .provenance import DataSource, code_version

#: the data sets a run reads, asked for only when the run is new (a reopened run has them)
Sources = Callable[[], list[DataSource]]

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
              run_id: str | None = None, datasets: Sources | None = None) -> str:
    """The phase's parent run: `run_id` reopened (a resumed phase), or a new one."""
    if run_id is not None:
        mlflow_client.update_run(run_id, status="RUNNING")
        return run_id
    run = mlflow_client.create_run(exp_id, run_name=phase,
                                   tags={PHASE_TAG: phase, EXPERIMENT_TAG: experiment, **code_version()})
    log_params(mlflow_client, run.info.run_id, params)
    if datasets is not None:
        log_datasets(mlflow_client, run.info.run_id, datasets)
    return run.info.run_id


def trial_run(mlflow_client, exp_id: str, parent_id: str, trial_id: str, params: dict[str, Any],
              datasets: Sources | None = None, start_time: int | None = None) -> str:
    """A trial's child run: found by its tags and reopened (a retried or resumed trial), or new
    (started at `start_time`, ms since the epoch: when the trial started, for a replayed call)."""
    found = find_runs(mlflow_client, exp_id, parent=parent_id, trial=trial_id)
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            mlflow_client.update_run(run_id, status="RUNNING")
        return run_id
    run = mlflow_client.create_run(exp_id, run_name=trial_id, start_time=start_time,
                                   tags={PARENT_TAG: parent_id, TRIAL_TAG: trial_id, **code_version()})
    log_params(mlflow_client, run.info.run_id, params)
    if datasets is not None:
        log_datasets(mlflow_client, run.info.run_id, datasets)
    return run.info.run_id


def log_datasets(mlflow_client, run_id: str, sources: Sources) -> None:
    """Each data set as a dataset input of the run (what `mlflow.log_input` records), or one
    line saying they were not logged."""
    try:
        inputs = [dataset_input(source) for source in sources()]
        if inputs:
            mlflow_client.log_inputs(run_id, datasets=inputs)
    except Exception as exc:  # noqa: BLE001 - bookkeeping beside the run must not stop it
        not_logged(f"the dataset inputs of run {run_id}", exc)


def dataset_input(source: DataSource):
    """An mlflow.data MetaDataset of the source (no data read: its name, where it is, its
    digest), with what the run does with it in the input tag mlflow.data.context."""
    import warnings

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    if source.embedded:
        origin = CodeDatasetSource({"module": "clipsearch.data.embedded", "set": source.name})
    else:
        with warnings.catch_warnings():  # a local path resolves to LocalArtifactDatasetSource either way
            warnings.simplefilter("ignore")
            origin = resolve_dataset_source(source.uri)
    dataset = MetaDataset(origin, name=source.name, digest=source.digest)
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, source.context), InputTag("clipsearch.digest_of", source.digest_of)]
    if source.share != 1:
        tags.append(InputTag("clipsearch.data.fraction", str(source.share)))
    return DatasetInput(dataset._to_mlflow_entity(), tags)


def not_logged(what: str, exc: BaseException) -> None:
    """One line on stderr: what the tracking store did not get, and why."""
    print(f"clipsearch: MLflow: {what} not logged ({failure_reason(exc)})", file=sys.stderr, flush=True)


def failure_reason(exc: BaseException, limit: int = 300) -> str:
    """'TYPE: message' of the failure's first cause ('ConnectionRefusedError: [Errno 111]
    Connection refused'): what MLflow's HTTP client wraps it in is a URL and urllib3's retry
    summary; an error without a cause is itself."""
    seen = {id(exc)}
    while (cause := exc.__cause__ or exc.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        exc = cause
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:limit]}"


def log_params(mlflow_client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:_MAX_PARAM_LENGTH]) for k, v in params.items() if v is not None]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(mlflow_client, run_id: str, metrics: dict[str, Any], step: int, timestamp: int | None = None) -> None:
    """The numbers of `metrics` at `step`, stamped `timestamp` (ms since the epoch; now if None)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000) if timestamp is None else timestamp
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for i in range(0, len(items), 1000):
        mlflow_client.log_batch(run_id, metrics=items[i:i + 1000])


def close_running(mlflow_client, exp_id: str, parent_id: str, status: str = "KILLED",
                  end_time: int | None = None) -> int:
    """End the parent's child runs still RUNNING; returns how many there were."""
    stale = [r for r in find_runs(mlflow_client, exp_id, parent=parent_id) if r.info.status == "RUNNING"]
    for run in stale:
        mlflow_client.set_terminated(run.info.run_id, status=status, end_time=end_time)
    return len(stale)


def end_run(mlflow_client, run_id: str, status: str, end_time: int | None = None) -> None:
    mlflow_client.set_terminated(run_id, status=status, end_time=end_time)


#: MLflow's HTTP settings for calls that a queue retries anyway: its defaults (7 retries with a
#: backoff from 2 s doubling, a 120 s timeout) hold one call against a stopped server for about
#: 4 minutes, at every epoch of every trial; one quick retry (a blip) is enough here
FAIL_FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


@contextlib.contextmanager
def fail_fast():
    """MLflow's HTTP calls in the block fail within seconds when the server does not answer
    (FAIL_FAST_HTTP; MLflow reads them at each request); those the user has set stay theirs."""
    added = {k: v for k, v in FAIL_FAST_HTTP.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


#: MLflow's message for a response of a server (or of the proxy before it) that is there but
#: cannot serve now: "API request to endpoint ... failed with error code 503 != 200"
_UNAVAILABLE = re.compile(r"failed with error code (502|503|504)\b")


def store_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the tracking store did not answer (a refused or timed-out connection,
    a 502/503/504, a locked or unreachable database), rather than that it answered and refused
    the call (a bad value, a missing run, permissions): the first is worth queueing and trying
    again, the second is not."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)) or _is_named(exc, _UNREACHABLE_ERRORS):
            return True
        if _UNAVAILABLE.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


#: (module prefix, class name) of the errors of a store that did not answer: requests' (MLflow's
#: HTTP client wraps them in an MlflowException whose cause they are), urllib3's, and SQLAlchemy's
#: OperationalError (a database locked, gone, or on a full disk)
_UNREACHABLE_ERRORS = {("requests", "ConnectionError"), ("requests", "Timeout"), ("requests", "ConnectTimeout"),
                       ("requests", "ReadTimeout"), ("requests", "RetryError"), ("urllib3", "MaxRetryError"),
                       ("urllib3", "ProtocolError"), ("sqlalchemy", "OperationalError")}


def _is_named(exc: BaseException, names: set[tuple[str, str]]) -> bool:
    # by name: neither requests nor SQLAlchemy is imported to find out
    return any(cls.__module__.split(".")[0] == module and cls.__name__ == name
               for cls in type(exc).__mro__ for module, name in names)


def registered_version(uri: str, name: str, run_id: str, tags: dict[str, str]) -> str | None:
    """The version of registered model `name` already logged from run `run_id` with every one of
    `tags`, or None: a phase that is run again after it finished (kept by --resume) has the
    same best, and registering it again would make a new version of the same model."""
    registry = client(uri)
    with fail_fast():
        versions = registry.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    same = [v for v in versions if all(v.tags.get(k) == value for k, value in tags.items())]
    return str(min(int(v.version) for v in same)) if same else None


def log_registered_model(uri: str, run_id: str, model, name: str, tags: dict[str, str], description: str) -> str:
    """`model` (a torch module) logged with mlflow.pytorch.log_model into run `run_id` and
    registered as a new version of the registered model `name`, which gets `tags` and
    `description`; returns the version. Pickled (MLflow's pt2 export needs an input example
    traced through forward, and a dual encoder's forward takes a token dict): loading it needs
    clipsearch installed, which its pip requirements say."""
    import logging

    import mlflow
    import mlflow.pytorch
    import torch

    from . import __version__

    requirements = [f"clipsearch=={__version__}", f"torch=={torch.__version__.split('+')[0]}"]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # log_model and the registry read the process-wide URI
    # its warning that a pickle runs code when loaded, at every log: the docs say it once
    quiet = logging.getLogger("mlflow.pytorch")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # the run is reopened for the block so that MLflow files the logged model under the run's
        # experiment; it ends FINISHED again (only a finished phase has a best model to log); a
        # server that is down costs seconds, not MLflow's minutes of retries per call
        with fail_fast(), mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(model, name="model", registered_model_name=name,
                                            serialization_format="pickle", pip_requirements=requirements,
                                            await_registration_for=60)
        version = str(info.registered_model_version)
        registry = client(uri)
        with fail_fast():
            for key, value in tags.items():
                registry.set_model_version_tag(name, version, key, value)
            registry.update_model_version(name, version, description=description)
        return version
    finally:
        mlflow.set_tracking_uri(previous)
        quiet.setLevel(level)
