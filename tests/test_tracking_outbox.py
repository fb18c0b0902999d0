"""The driver's MLflow calls while the tracking server is down (clipsearch.tracking_outbox):
queued, not raised, nor held up by MLflow's retries; replayed in order once the server is back,
by the phase itself or by `clipsearch mlflow replay`; no run left RUNNING.

The server is MLflow's own tracking server app (the Flask app `mlflow server` runs, its store a
sqlite file, its artifacts served) on a real socket in this process, stopped and started again
on the same port: a `mlflow server` subprocess takes ~7-17 s to start here, twice per test.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from clipsearch import tracking, tracking_outbox
from clipsearch.tracking_outbox import PARENT, PENDING_FILE, open_outbox, trial_ref


class Server:
    """MLflow's tracking server on 127.0.0.1:port, to stop and start again on the same port."""

    def __init__(self, root, monkeypatch):
        from mlflow.server import constants, handlers

        for name, value in ((constants.BACKEND_STORE_URI_ENV_VAR, f"sqlite:///{root / 'server.db'}"),
                            (constants.ARTIFACT_ROOT_ENV_VAR, "mlflow-artifacts:/"),
                            (constants.SERVE_ARTIFACTS_ENV_VAR, "true"),
                            (constants.ARTIFACTS_DESTINATION_ENV_VAR, str(root / "artifacts"))):
            monkeypatch.setenv(name, value)
        for cached in ("_tracking_store", "_model_registry_store", "_artifact_repo"):  # another test's store
            monkeypatch.setattr(handlers, cached, None)
        self.port, self._server = None, None
        self.start()
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from mlflow.server import app
        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", self.port or 0, app, threaded=True)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def server(tmp_path, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("werkzeug"), "level", logging.ERROR)  # a line per request
    monkeypatch.setattr(tracking_outbox, "_OPEN", {})
    running = Server(tmp_path, monkeypatch)
    yield running
    running.stop()


def ours(capsys) -> list[str]:
    """clipsearch's lines on stderr (the server's store writes its own log lines there too)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("clipsearch:")]


def phase_with_one_trial(server, folder):
    """A parent run and trial t1's run, opened while the server is up; the phase's outbox."""
    client = tracking.client(server.uri)
    exp = tracking.experiment_id(client, server.uri, "exp")
    parent = tracking.phase_run(client, exp, "exp", "phase1", {"space": "s.yaml"})
    folder.mkdir()
    box = open_outbox(folder, server.uri, exp, parent)
    box.open_trial("t1", {"optimizer.lr": 0.01})
    box.log_metrics(trial_ref("t1"), {"objective": 3.0}, step=1)
    return client, exp, parent, box


def the_outage(box, folder):
    """What the phase logs while the server is down: an epoch, a new trial, the phase's end."""
    (folder / "trials.csv").write_text("trial_id,status\nt1,TERMINATED\nt2,TERMINATED\n")
    box.log_metrics(trial_ref("t1"), {"objective": 5.0}, step=2)
    box.end_run(trial_ref("t1"), "FINISHED")
    box.open_trial("t2", {"optimizer.lr": 0.02})
    box.log_metrics(trial_ref("t2"), {"objective": 4.0, "note": "text"}, step=1)
    box.end_run(trial_ref("t2"), "FINISHED")
    box.log_artifact(PARENT, folder / "trials.csv")
    box.close_running(PARENT)
    box.end_run(PARENT, "FINISHED")


def check_the_store(client, exp, parent, down_from):
    runs = {r.info.run_name: r for r in client.search_runs([exp])}
    assert set(runs) == {"phase1", "t1", "t2"}
    assert {name: r.info.status for name, r in runs.items()} == dict.fromkeys(runs, "FINISHED")
    history = [(m.step, m.value) for m in client.get_metric_history(runs["t1"].info.run_id, "objective")]
    assert sorted(history) == [(1, 3.0), (2, 5.0)]
    t2 = runs["t2"]
    assert t2.data.params == {"optimizer.lr": "0.02"} and t2.data.tags["mlflow.parentRunId"] == parent
    assert t2.data.metrics == {"objective": 4.0}
    # replayed as it happened: t2 started (and its epoch was stamped) during the outage
    assert down_from <= t2.info.start_time <= client.get_metric_history(t2.info.run_id, "objective")[0].timestamp
    assert [a.path for a in client.list_artifacts(parent)] == ["trials.csv"]


@pytest.mark.census("tracking server down")
def test_calls_to_a_stopped_server_are_queued_and_replayed_in_order_when_it_is_back(server, tmp_path, capsys):
    folder = tmp_path / "phase1"
    client, exp, parent, box = phase_with_one_trial(server, folder)
    server.stop()
    down_from, started = int(time.time() * 1000), time.monotonic()
    the_outage(box, folder)
    assert time.monotonic() - started < 5  # not MLflow's retries: ~4 minutes a call
    queued = [json.loads(line)["op"] for line in (folder / PENDING_FILE).read_text().splitlines()]
    assert queued == ["log_metrics", "end_run", "open_trial", "log_metrics", "end_run", "log_artifact",
                      "close_running", "end_run"]
    lines = ours(capsys)
    assert len(lines) == 1 and f"the tracking store {server.uri} does not answer (ConnectionRefusedError" in lines[0]
    assert f"queued in {folder / PENDING_FILE}" in lines[0]

    server.start()
    box._next_try = 0.0  # RETRY_S has passed: the next call tries again
    box.log_metrics(PARENT, {"best_score": 5.0}, step=0)  # the phase's next call replays the queue first
    assert not (folder / PENDING_FILE).exists() and not box.queue
    [line] = ours(capsys)
    assert "answers again after" in line and "8 queued call(s) replayed" in line
    check_the_store(client, exp, parent, down_from)
    assert client.get_run(parent).data.metrics == {"best_score": 5.0}


@pytest.mark.census("tracking server down")
def test_a_phase_that_ends_during_the_outage_says_what_is_queued_and_the_replay_command_logs_it(server, tmp_path,
                                                                                            capsys):
    from typer.testing import CliRunner

    from clipsearch.cli import app

    folder = tmp_path / "phase1"
    client, exp, parent, box = phase_with_one_trial(server, folder)
    (folder / "phase.json").write_text(json.dumps({"tracking_uri": server.uri, "mlflow_experiment_id": exp,
                                                   "parent_run_id": parent}))
    server.stop()
    down_from = int(time.time() * 1000)
    the_outage(box, folder)
    assert box.settle() == 8
    last = ours(capsys)[-1]
    assert last == (f"clipsearch: MLflow: 8 MLflow call(s) (2 metric batch(es), 3 run end(s), 1 trial run(s) to "
                    f"open, 1 artifact(s), 1 close(s) of runs left RUNNING) not logged yet: the tracking store "
                    f"{server.uri} does not answer, and the phase's runs it has not ended stay RUNNING there until "
                    f"they are; once it answers, run `clipsearch mlflow replay {folder}`")
    with (folder / PENDING_FILE).open("a") as torn:  # a driver killed mid-line
        torn.write('{"op": "log_met')

    tracking_outbox._OPEN.clear()  # the command runs in another process: it reads the file
    still_down = CliRunner().invoke(app, ["mlflow", "replay", str(tmp_path)])
    assert still_down.exit_code == 1 and "8 MLflow call(s)" in still_down.stderr
    assert "still queued" in still_down.stderr and "run the same command once it does" in still_down.stderr

    server.start()
    tracking_outbox._OPEN.clear()
    replayed = CliRunner().invoke(app, ["mlflow", "replay", str(tmp_path)])
    assert replayed.exit_code == 0, replayed.stderr
    assert replayed.stderr.strip().splitlines()[-1] == f"{folder}: 8 MLflow call(s) replayed"
    assert "line 9 is not a whole call" in replayed.stderr
    assert not (folder / PENDING_FILE).exists()
    check_the_store(client, exp, parent, down_from)
    again = CliRunner().invoke(app, ["mlflow", "replay", str(tmp_path)])
    assert again.exit_code == 0 and "nothing queued for MLflow" in again.stderr


def test_a_down_store_is_tried_again_only_after_a_pause_and_a_refused_call_costs_one_line(tmp_path, capsys):
    uri = tracking.default_tracking_uri(tmp_path)  # a store that answers, for the refusal
    client = tracking.client(uri)
    exp = tracking.experiment_id(client, uri, "exp")
    parent = tracking.phase_run(client, exp, "exp", "phase1", {})
    box = tracking_outbox.Outbox(uri, exp, parent, tmp_path)
    box.runs["trial:gone"] = "0" * 32  # a run the store does not have: it answers, and refuses
    box.log_metrics("trial:gone", {"objective": 1.0}, step=1)
    box.log_metrics(PARENT, {"objective": 2.0}, step=1)  # the refusal did not block what follows
    assert not box.queue and client.get_run(parent).data.metrics == {"objective": 2.0}
    err = ours(capsys)
    assert len(err) == 1 and "trial:gone's metrics at step 1 not logged (MlflowException" in err[0]

    tries = []

    def down(op):
        tries.append(op["op"])
        raise ConnectionRefusedError("[Errno 111] Connection refused")

    box._apply = down
    for step in range(2, 7):
        box.log_metrics(PARENT, {"objective": float(step)}, step=step)
    assert tries == ["log_metrics"] and len(box.queue) == 5  # one try, then RETRY_S before the next
    box._next_try = 0.0
    box.log_metrics(PARENT, {"objective": 7.0}, step=7)
    assert tries == ["log_metrics"] * 2 and len(box.queue) == 6  # the head of the queue tried, in order


def test_only_a_store_that_does_not_answer_is_worth_queueing():
    from mlflow.exceptions import MlflowException

    refused = ConnectionRefusedError(111, "Connection refused")
    try:
        raise MlflowException("API request to http://127.0.0.1:9/api/2.0/mlflow/runs/log-batch failed") from refused
    except MlflowException as wrapped:
        assert tracking.store_unreachable(wrapped)
    assert tracking.store_unreachable(MlflowException("API request to endpoint /api/2.0/mlflow/runs/get failed with "
                                                      "error code 503 != 200. Response body: ''"))
    assert not tracking.store_unreachable(MlflowException("Run 'abc' not found", error_code="RESOURCE_DOES_NOT_EXIST"))
    assert not tracking.store_unreachable(FileNotFoundError(2, "No such file", "best/model.pt"))
