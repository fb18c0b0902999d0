"""A real two-node Ray cluster on this one machine, started the way users start one: `ray start
--head`, then a second `ray start --address` with its own CPU and a custom resource; token
authentication on, with a token of its own (RAY_AUTH_TOKEN). The cluster test
(tests/tune/test_cluster.py) and the node-loss bench (clipsearch.bench.node_loss) run on it.

Both nodes share this machine's IP: trials are told apart by the Ray node id each one reports
(clipsearch.tune.trainable). Each node is a `ray start --block` in a session of its own, stopped
with SIGTERM (or, past a timeout, SIGKILL to its session) rather than `ray stop`: `ray stop`
kills every Ray process of the machine, including clusters others started.

Ray is not imported: the nodes are `ray` commands beside this interpreter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def start_head(gcs: int, dashboard: int, temp_dir: Path, log: Path, env: dict) -> subprocess.Popen:
    # Ray's unix sockets live under --temp-dir: keep it short (the 107-byte limit)
    return start_node(["--head", "--port", str(gcs), "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
                       "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard)], log, env)


def start_worker(gcs: int, log: Path, env: dict) -> subprocess.Popen:
    return start_node(["--address", f"127.0.0.1:{gcs}", "--node-ip-address", "127.0.0.1",
                       "--resources", json.dumps({WORKER_RESOURCE: 1})], log, env)


def head_ready(log: Path) -> bool:
    return "block forever" in log.read_text(errors="replace")


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
        os.killpg(proc.pid, signal.SIGKILL)  # its session: never anything this process did not start
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
