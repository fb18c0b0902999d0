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
