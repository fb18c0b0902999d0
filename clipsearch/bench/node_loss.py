"""A node lost mid-epoch, for real: a two-node Ray cluster on this machine
(clipsearch.bench.local_cluster: a head and a worker of one CPU each), a quick phase 1 of two
trials run on it with `--address` and `--storage` a path both nodes reach, one trial on each
node; once both have reported an epoch (so both have a checkpoint in the storage), the worker
node's raylet is SIGKILLed a random moment later. Its `ray start` then stops the rest of the
node, as a machine that dies takes its processes with it.

What must hold is what a user needs: the trial that ran there goes on from its last
checkpoint on the head (no epoch run twice, none skipped), the phase ends with every trial
finished once (exit 0), and trials.csv and MLflow agree: one FINISHED run per trial, none
left RUNNING, each run's objective logged once per epoch, its last value trials.csv's.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..results import read_histories
from . import local_cluster as lc
from .kill_loop import TINY_PARAMS, _half_written, _wait, descendants, phase1_outcome

SPACE = """base: quick
num_samples: {trials}
max_concurrent: {trials}
scheduler: {{kind: none}}
""" + TINY_PARAMS
EPOCH = re.compile(r"trial (\S+): epoch (\d+)/")
RAYLET = "/raylet/raylet"  # the raylet binary's path in its command line


@dataclass
class NodeLoss:
    """What one run saw: when the node went, the phase's exit, and each check."""

    trials_configured: int
    epochs: int
    kill_moment_s: float | None = None   # after both trials' first reported epoch
    killed_trial: str | None = None
    epochs_before_kill: list[int] = field(default_factory=list)  # the killed trial's, on the worker
    epochs_after_kill: list[int] = field(default_factory=list)   # on the head, after its retry
    worker_node_exit: int | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    rows: int = 0
    terminated: int = 0
    runs: dict = field(default_factory=dict)  # MLflow trial run status -> count
    driver_lines: list[str] = field(default_factory=list)  # what the user saw of the killed trial
    failures: list[str] = field(default_factory=list)


def run_node_loss(trials: int = 2, epochs: int = 4, seed: int = 0, timeout_s: float = 1200.0) -> NodeLoss:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="csnl"))  # short: Ray's socket paths live under it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}
    (work / "space.yaml").write_text(SPACE.format(trials=trials, epochs=epochs), encoding="utf-8")
    loss, started, nodes = NodeLoss(trials, epochs), time.time(), {}
    gcs, dashboard = lc.free_ports(2)
    try:
        nodes["head"] = lc.start_head(gcs, dashboard, work / "r", work / "head.log", env)
        lc.wait_until(lambda: lc.head_ready(work / "head.log"), "the head node", 180, nodes["head"])
        nodes["worker"] = lc.start_worker(gcs, work / "worker.log", env)
        listed = lc.wait_until(lambda: (n := lc.alive_nodes(f"http://127.0.0.1:{dashboard}", env)) and len(n) == 2
                               and n, "two alive nodes", 180, *nodes.values())
        worker_id = next(n["node_id"] for n in listed if not n["is_head_node"])
        driver, log = _start_driver(work, env, gcs)
        if _wait_for_first_epochs(log, driver, trials, timeout_s):
            loss.kill_moment_s = round(rng.uniform(0.5, 2.5), 1)
            time.sleep(loss.kill_moment_s)
            _kill_raylet(nodes["worker"].pid)
            loss.worker_node_exit = _wait_for_exit(nodes["worker"], 60)
        loss.exit_code = _wait(driver, timeout_s)
        loss.seconds = round(time.time() - started, 1)
        _count(loss, work / "results", log.read_text(errors="replace"), worker_id)
    finally:
        for proc in (nodes.get("worker"), nodes.get("head")):
            if proc is not None:
                lc.stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    return loss


def _start_driver(work: Path, env: dict, gcs: int):
    import subprocess
    import sys

    log = work / "driver.log"
    argv = [sys.executable, "-m", "clipsearch.cli", "phase1", "--space", "space.yaml", "--name", "k",
            "--address", f"127.0.0.1:{gcs}", "--storage", str(work / "shared")]
    with open(log, "w") as stderr:
        driver = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                  start_new_session=True)
    return driver, log


def _wait_for_first_epochs(log: Path, driver, trials: int, timeout_s: float) -> bool:
    """Until each of the phase's `trials` trials has reported an epoch (they run one a node)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and driver.poll() is None:
        if len({m.group(1) for m in EPOCH.finditer(log.read_text(errors="replace"))}) >= trials:
            return True
        time.sleep(0.5)
    return False


def _kill_raylet(node_pid: int) -> None:
    for pid in descendants(node_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if RAYLET in cmdline.split("\0", 1)[0]:
            os.kill(pid, signal.SIGKILL)
            return
    raise RuntimeError("the worker node has no raylet to kill")


def _wait_for_exit(proc, timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except Exception:  # noqa: BLE001 - still up: stopped in the finally
        return None


def _count(loss: NodeLoss, results: Path, log: str, worker_id: str) -> None:
    outcome = phase1_outcome(results)
    if outcome is None:
        loss.failures.append(f"the phase did not finish (exit {loss.exit_code}): no trials.csv")
        return
    rows, runs = outcome
    loss.rows = len(rows)
    loss.terminated = sum(r["status"] == "TERMINATED" for r in rows)
    histories = read_histories(results / "k" / "phase1" / "history")
    for trial_id, history in histories.items():
        if any(epoch.get("node_id") == worker_id for epoch in history):
            loss.killed_trial = trial_id
            loss.epochs_before_kill = [int(e["epoch"]) for e in history if e.get("node_id") == worker_id]
            loss.epochs_after_kill = [int(e["epoch"]) for e in history if e.get("node_id") != worker_id]
    loss.driver_lines = [line for line in log.splitlines() if loss.killed_trial and f"trial {loss.killed_trial}:"
                         in line and ": epoch " not in line]
    trial_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    for run in trial_runs:
        loss.runs[run.info.status] = loss.runs.get(run.info.status, 0) + 1
    loss.failures = check(loss, rows, trial_runs, results)


def check(loss: NodeLoss, rows: list[dict], trial_runs: list, results: Path) -> list[str]:
    """Every way the run falls short of what a user needs; empty when it passes."""
    from ..tracking import client as tracking_client

    n, epochs = loss.trials_configured, list(range(1, loss.epochs + 1))
    ids = [r["trial_id"] for r in rows]
    failures = [text for bad, text in (
        (loss.kill_moment_s is None, "no node was killed: the phase ended first"),
        (loss.exit_code != 0, f"exit {loss.exit_code}"),
        (len(ids) != n or len(set(ids)) != n, f"{len(ids)} rows, {len(set(ids))} distinct trials of {n}"),
        (loss.terminated != n, f"{loss.terminated} TERMINATED of {n}"),
        (any(r["epochs"] != loss.epochs for r in rows), f"epochs {[r['epochs'] for r in rows]}, not {loss.epochs}"),
        (not loss.epochs_before_kill or not loss.epochs_after_kill,
         f"no trial ran on both nodes (on the worker: {loss.epochs_before_kill}, after: {loss.epochs_after_kill})"),
        (loss.epochs_before_kill + loss.epochs_after_kill != epochs,
         f"the killed trial's epochs {loss.epochs_before_kill} then {loss.epochs_after_kill}: not on from its checkpoint"),
        (loss.runs != {"FINISHED": n}, f"MLflow trial runs {loss.runs}, not {n} FINISHED"),
        *_half_written_failures(results),
    ) if bad]
    client = tracking_client(f"sqlite:///{results / 'mlflow.db'}")
    by_trial = {r.data.tags.get("clipsearch.trial_id"): r for r in trial_runs}
    for row in rows:
        run = by_trial.get(row["trial_id"])
        history = client.get_metric_history(run.info.run_id, "objective") if run else []
        steps = sorted(m.step for m in history)
        last = max(history, key=lambda m: m.step).value if history else None
        if steps != epochs or last is None or abs(last - row["objective"]) > 1e-6:
            failures.append(f"trial {row['trial_id']}: MLflow objective steps {steps} last {last}, "
                            f"trials.csv {row['objective']} at {row['epochs']} epochs")
    return failures


def _half_written_failures(results: Path) -> list[tuple[bool, str]]:
    return [(True, f"half-written {path}") for path in _half_written(results / "k" / "phase1")]

