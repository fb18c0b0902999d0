"""MLflow bookkeeping (clipsearch.tracking): runs found again by tags, none left RUNNING."""

from clipsearch import tracking


def test_a_resumed_phase_keeps_its_runs_and_closes_what_the_dead_driver_left(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    client = tracking.client(uri)
    exp = tracking.experiment_id(client, uri, "exp")
    assert tracking.experiment_id(client, uri, "exp") == exp  # one experiment per EXP
    parent = tracking.phase_run(client, exp, "exp", "phase1", {"space": "s.yaml"})
    first = tracking.trial_run(client, exp, parent, "t1", {"optimizer.lr": 1e-3, "skipped": None})
    tracking.log_metrics(client, first, {"objective": 3.5, "note": "text", "flag": True}, step=1)
    other = tracking.trial_run(client, exp, parent, "t2", {"optimizer.lr": 2e-3})
    tracking.end_run(client, other, "FINISHED")

    # the driver dies here: parent and t1 stay RUNNING; on resume
    assert tracking.close_running(client, exp, parent) == 1
    assert tracking.phase_run(client, exp, "exp", "phase1", {}, run_id=parent) == parent
    again = tracking.trial_run(client, exp, parent, "t1", {"optimizer.lr": 1e-3})
    assert again == first and client.get_run(first).info.status == "RUNNING"

    run = client.get_run(first)
    assert run.data.params == {"optimizer.lr": "0.001"} and run.data.metrics == {"objective": 3.5}
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["clipsearch.trial_id"] == "t1"
    assert client.get_experiment(exp).artifact_location == (tmp_path / "mlartifacts").resolve().as_uri()


def test_a_new_run_carries_the_code_version_and_its_data_sets(tmp_path):
    from clipsearch.config import load_config
    from clipsearch.provenance import GIT_COMMIT_TAG, code_version, data_sources

    uri = tracking.default_tracking_uri(tmp_path)
    client = tracking.client(uri)
    exp = tracking.experiment_id(client, uri, "exp")
    sources = data_sources(load_config(None, ["data.fraction=0.1"], quick=True))
    parent = tracking.phase_run(client, exp, "exp", "phase1", {}, datasets=lambda: sources)
    child = tracking.trial_run(client, exp, parent, "t1", {}, datasets=lambda: sources)
    for run_id in (parent, child):
        run = client.get_run(run_id)
        assert {k: run.data.tags[k] for k in code_version()} == code_version()
        assert {"clipsearch.version", "torch.version", "ray.version"} <= set(run.data.tags)
        inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
        assert set(inputs) == {s.name for s in sources}
        training = inputs["embedded:mnist5000-captions"]
        assert training.dataset.digest == sources[0].digest and training.dataset.source_type == "code"
        tags = {t.key: t.value for t in training.tags}
        assert tags["mlflow.data.context"] == "training" and tags["clipsearch.data.fraction"] == "0.1"
    assert (GIT_COMMIT_TAG in code_version()) == (tracking.code_version().get(GIT_COMMIT_TAG) is not None)


def test_a_reopened_run_logs_no_second_set_of_inputs(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    client = tracking.client(uri)
    exp = tracking.experiment_id(client, uri, "exp")
    parent = tracking.phase_run(client, exp, "exp", "phase1", {})
    first = tracking.trial_run(client, exp, parent, "t1", {}, datasets=lambda: [])

    def never():
        raise AssertionError("a reopened run asks for no data sets")

    assert tracking.trial_run(client, exp, parent, "t1", {}, datasets=never) == first


def test_data_sets_the_store_refuses_cost_one_line_and_no_error(tmp_path, capsys):
    class Down:
        def log_inputs(self, run_id, datasets):
            raise ConnectionError("tracking server at http://mlflow:5000 is down")

    from clipsearch.config import load_config
    from clipsearch.provenance import data_sources

    sources = data_sources(load_config(None, [], quick=True))
    tracking.log_datasets(Down(), "r1", lambda: sources)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "the dataset inputs of run r1 not logged" in lines[0] and "is down" in lines[0]


def test_a_trial_callback_whose_store_goes_down_says_so_once_and_queues_its_calls(tmp_path, capsys, monkeypatch):
    import json
    from types import SimpleNamespace

    from clipsearch import tracking_outbox
    from clipsearch.tune.callbacks import MLflowTrialRuns

    monkeypatch.setattr(tracking_outbox, "_OPEN", {})
    calls = []

    class Down:  # every call of the client fails, as with a server that does not answer
        def __getattr__(self, name):
            def call(*args, **kwargs):
                calls.append(name)
                raise ConnectionError("connection refused")

            return call

    callback = MLflowTrialRuns("http://127.0.0.1:9", "1", "parent", folder=tmp_path)
    callback.box._client = Down()
    trial = SimpleNamespace(trial_id="t1", config={"optimizer": {"lr": 0.01}})
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {"epoch": 1, "objective": 3.0})
    callback.on_trial_complete(0, [], trial)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(calls) == 1 and len(lines) == 1  # no retry at every epoch: the next comes RETRY_S later
    assert "the tracking store http://127.0.0.1:9 does not answer (ConnectionError: connection refused)" in lines[0]
    queued = [json.loads(line) for line in (tmp_path / tracking_outbox.PENDING_FILE).read_text().splitlines()]
    assert [(op["op"], op.get("run")) for op in queued] == [("open_trial", None), ("log_metrics", "trial:t1"),
                                                           ("end_run", "trial:t1")]
    assert queued[0]["params"] == {"optimizer.lr": "0.01"} and queued[1]["metrics"] == {"objective": 3.0}
    restored = pickle_round_trip(callback)  # Ray pickles it with the experiment: the outbox is rebuilt
    assert restored._box is None and restored.box is callback.box


def pickle_round_trip(obj):
    import pickle

    return pickle.loads(pickle.dumps(obj))


def test_trials_a_budget_stops_end_finished_as_trials_csv_has_them(tmp_path, monkeypatch):
    """Tune's time or epoch budget stops the trials left TERMINATED without on_trial_complete:
    their runs end FINISHED at the experiment's end, not KILLED by the phase's close."""
    from types import SimpleNamespace

    from clipsearch import tracking_outbox
    from clipsearch.tune.callbacks import MLflowTrialRuns

    monkeypatch.setattr(tracking_outbox, "_OPEN", {})
    uri = tracking.default_tracking_uri(tmp_path)
    client = tracking.client(uri)
    exp = tracking.experiment_id(client, uri, "exp")
    parent = tracking.phase_run(client, exp, "exp", "phase1", {})
    callback = MLflowTrialRuns(uri, exp, parent, folder=tmp_path)
    done, stopped, cut = (SimpleNamespace(trial_id=t, config={}, status="RUNNING") for t in ("done", "stopped", "cut"))
    for trial in (done, stopped, cut):
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, {"epoch": 1, "objective": 1.0})
    callback.on_trial_complete(0, [], done)
    done.status = stopped.status = "TERMINATED"  # cut: still RUNNING (an interruption)
    ended = client.get_run(callback.box.runs["trial:done"]).info.end_time
    callback.on_experiment_end([done, stopped, cut, SimpleNamespace(trial_id="never", status="TERMINATED")])
    status = {t: client.get_run(callback.box.runs[f"trial:{t}"]).info.status for t in ("done", "stopped", "cut")}
    assert status == {"done": "FINISHED", "stopped": "FINISHED", "cut": "RUNNING"}  # cut: the phase closes it
    assert client.get_run(callback.box.runs["trial:done"]).info.end_time == ended  # not ended twice
    assert "trial:never" not in callback.box.runs
