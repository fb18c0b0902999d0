"""A search on a real two-node Ray cluster, the way users run one: `ray start --head`, a
second `ray start --address` with its own CPU and a custom resource, an MLflow tracking
server, then `clipsearch phase1 --quick --address HEAD --storage URI --tracking-uri SERVER`.
The trials land on both nodes, Tune keeps them under the --storage URI, the runs reach the
server, and each node is stopped by its own command.

Both nodes run on this machine, so they share an IP: trials are told apart by the Ray node
id each one reports (clipsearch.tune.trainable), checked against `ray list nodes`. Token
authentication is on, with a token of the test's own (RAY_AUTH_TOKEN), as on a real cluster.

Each node is a `ray start --block` stopped with SIGTERM rather than `ray stop`: `ray stop`
kills every Ray process of the machine, including clusters this test did not start.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import ENV, run_cli

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
WORKER_RESOURCE = "clipsearch_worker"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def node_ports() -> list[str]:
    """The ports a node would otherwise take at fixed defaults, clashing with the other node."""
    agent, grpc, metrics, runtime_env = free_ports(4)
    return ["--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(grpc),
            "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env)]


def start_node(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(200 * 2**20),
              "--disable-usage-stats"]
    return subprocess.Popen([RAY, "start", *args, *common, *node_ports()], env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_until(ready, what: str, timeout: float = 120, *procs: subprocess.Popen):
    deadline = time.time() + timeout
    while time.time() < deadline:
        dead = [p.args[:3] for p in procs if p.poll() is not None]
        assert not dead, f"{dead} exited while waiting for {what}"
        value = ready()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def alive_nodes(dashboard: str, env: dict) -> list[dict]:
    done = subprocess.run([RAY, "list", "nodes", "--address", dashboard, "--format", "json", "--filter",
                           "state=ALIVE"], env=env, capture_output=True, text=True, timeout=60)
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else []


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop(proc: subprocess.Popen, timeout: float = 60) -> int:
    """SIGTERM to a `ray start --block` (or any server): it stops its own processes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its session: never anything this test did not start
        return proc.wait(10)


def processes_mentioning(text: str) -> list[str]:
    """Command lines (Linux /proc) that contain `text`: a node's processes name its temp dir."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline[:200])
    return found


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
    head = start_node(["--head", "--port", str(gcs), "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
                       "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard)], root / "head.log", env)
    nodes = {"head": head}
    try:
        wait_until(lambda: "block forever" in (root / "head.log").read_text(), "the head node", 180, head)
        nodes["worker"] = start_node(["--address", f"127.0.0.1:{gcs}", "--node-ip-address", "127.0.0.1",
                                      "--resources", json.dumps({WORKER_RESOURCE: 1})], root / "worker.log", env)
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
