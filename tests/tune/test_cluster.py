"""A search on a real two-node Ray cluster, the way users run one: `ray start --head`, a
second `ray start --address` with its own CPU and a custom resource, an MLflow tracking
server, then `clipsearch phase1 --quick --address HEAD --storage URI --tracking-uri SERVER`.
The trials land on both nodes, Tune keeps them under the --storage URI, the runs reach the
server, and each node is stopped by its own command.

Both nodes run on this machine, so they share an IP: trials are told apart by the Ray node
id each one reports (clipsearch.tune.trainable), checked against `ray list nodes`. Token
authentication is on, with a token of the test's own (RAY_AUTH_TOKEN), as on a real cluster.

The nodes are started and stopped by clipsearch.bench.local_cluster (the node-loss bench runs on
the same cluster): each is a `ray start --block` stopped with SIGTERM rather than `ray stop`,
which kills every Ray process of the machine, including clusters this test did not start.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipsearch.bench.local_cluster import (WORKER_RESOURCE, alive_nodes, free_ports, head_ready, port_answers,
                                            processes_mentioning, start_head, start_worker, stop, wait_until)

from .helpers import ENV, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    # Ray's unix sockets live under --temp-dir: a short path keeps them under the 107-byte limit
    temp_dir = Path(f"/tmp/cs2n-{os.getpid()}")
    env = {**ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    gcs, dashboard, mlflow_port = free_ports(3)
    started = time.time()
    mlflow = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts")],
        env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=(root / "mlflow.log").open("w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    head = start_head(gcs, dashboard, temp_dir, root / "head.log", env)
    nodes = {"head": head}
    try:
        wait_until(lambda: head_ready(root / "head.log"), "the head node", 180, head)
        nodes["worker"] = start_worker(gcs, root / "worker.log", env)
        listed = wait_until(lambda: (n := alive_nodes(f"http://127.0.0.1:{dashboard}", env)) and len(n) == 2 and n,
                            "two alive nodes", 180, *nodes.values())
        wait_until(lambda: port_answers(mlflow_port), "the MLflow server", 120, mlflow)
        yield {"root": root, "env": env, "gcs": gcs, "dashboard": f"http://127.0.0.1:{dashboard}", "nodes": listed, "procs": nodes, "temp_dir": temp_dir,
               "tracking": f"http://127.0.0.1:{mlflow_port}", "started": started}
    finally:
        for proc in (nodes.get("worker"), head, mlflow):
            if proc is not None:
                stop(proc)
        import shutil

        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def search(cluster):
    root = cluster["root"]
    storage = (root / "shared").as_uri()  # a URI, as an NFS mount or a bucket would be given
    began = time.time()
    out = run_cli("phase1", "--quick", "--name", "two", "--num-samples", "2", "--set", "train.epochs=1",
                  "--set", "data.fraction=0.05", "--address", f"127.0.0.1:{cluster['gcs']}",
                  "--storage", storage, "--tracking-uri", cluster["tracking"], cwd=root, env=cluster["env"])
    print(f"two-node phase1: {time.time() - began:.0f} s (cluster up in {began - cluster['started']:.0f} s)")
    return out


def trial_nodes(experiment: Path) -> dict[str, set[str]]:
    """trial folder -> the node ids its results name (Tune's result.json, one JSON per report)."""
    placed = {}
    for result in experiment.glob("trial_*/result.json"):
        placed[result.parent.name] = {json.loads(line)["node_id"] for line in result.read_text().splitlines() if line}
    return placed


def test_trials_run_on_both_nodes(cluster, search):
    assert search.returncode == 0, search.stderr[-3000:]
    assert json.loads(search.stdout.strip().splitlines()[-1])["trials"] == 2
    placed = trial_nodes(cluster["root"] / "shared" / "two" / "phase1" / "ray")
    assert len(placed) == 2 and all(len(ids) == 1 for ids in placed.values())
    used = set().union(*placed.values())
    listed = {n["node_id"]: n for n in cluster["nodes"]}
    assert used == set(listed)  # one trial on each node of the cluster
    worker = [i for i, n in listed.items() if WORKER_RESOURCE in (n.get("resources_total") or {})]
    assert len(worker) == 1 and worker[0] in used and not listed[worker[0]]["is_head_node"]


def test_the_storage_uri_holds_the_experiment_and_results_only_the_summaries(cluster, search):
    root = cluster["root"]
    assert (root / "shared" / "two" / "phase1" / "ray" / "tuner.pkl").is_file()
    phase = root / "results" / "two" / "phase1"
    assert (phase / "trials.csv").is_file() and not (phase / "ray").exists()
    state = json.loads((phase / "phase.json").read_text())
    assert state["storage_path"] == f"{(root / 'shared').as_uri()}/two/phase1"


def test_the_tracking_server_holds_the_parent_and_child_runs(cluster, search):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cluster["tracking"])
    exp = client.get_experiment_by_name("two")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.info.run_name == "phase1")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert "trials.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}  # uploaded to the server
    assert not (cluster["root"] / "results" / "mlflow.db").exists()


def test_each_node_stops_with_its_own_command(cluster, search):
    procs, temp_dir = cluster["procs"], str(cluster["temp_dir"])
    head_id = next(n["node_id"] for n in cluster["nodes"] if n["is_head_node"])
    stop(procs["worker"])
    # the worker is gone, the head still up and serving
    wait_until(lambda: [n["node_id"] for n in alive_nodes(cluster["dashboard"], cluster["env"])] == [head_id],
               "the head alone", 60)
    stop(procs["head"])
    wait_until(lambda: not processes_mentioning(temp_dir), "every process of both nodes to exit", 60)
