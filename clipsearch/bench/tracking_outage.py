"""The tracking server down mid-phase, for real: a quick phase 1 (a 3-minute time budget) logging
to an `mlflow server` on 127.0.0.1, the server killed (SIGKILL to its process group: its workers
too, nothing flushed) once the phase has reported an epoch, kept down for `outage_s`, then started again on the same
port over the same sqlite store and artifact folder. The phase must end with exit 0 and MLflow
must hold what it would have held without the outage: one child run per trial of trials.csv,
FINISHED (FAILED for an errored trial), each with every epoch trials.csv counts and its last
objective, the parent FINISHED with its artifacts, no run RUNNING, no call left queued.

If the phase ends before the server is back, what it says it left queued is replayed with
`clipsearch mlflow replay` once the server answers, and counted the same way; which of the two
happened is recorded. What the user saw (the driver's `clipsearch: MLflow:` lines) is kept.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .kill_loop import EPOCH_LINE, TINY_PARAMS, wait_for_line
from .local_cluster import free_ports

EXPERIMENT, PHASE = "outage", "phase1"
#: a time budget, not a trial count, sets the phase's length: trials must still be reporting when
#: the server is back, whatever the machine's load (a count of trials was not: 6, 12, then 24
#: trials of 4 epochs had all ended before it was back, in 76 to 180 s); no early stopping
SPACE = """base: quick
num_samples: {trials}
max_concurrent: 2
budget: {{minutes: {minutes}}}
scheduler: {{kind: none}}
""" + TINY_PARAMS
SERVER_READY_S = 180.0  # `mlflow server` on a busy 2-core machine: 7-17 s, more under load


@dataclass
class Outage:
    """What one outage run saw."""

    budget_minutes: float
    epochs: int
    outage_s: float
    exit_code: int | None = None
    seconds: float = 0.0
    down_at_s: float | None = None      # seconds after the phase started
    back_at_s: float | None = None      # the restarted server answering
    phase_ended_at_s: float | None = None
    replayed_by: str | None = None      # "the phase" or "clipsearch mlflow replay"
    replay_exit_code: int | None = None
    rows: int = 0
    child_runs: int = 0
    runs_left_running: int = 0
    calls_left_queued: int = 0
    runs_without_a_row: int = 0         # trials the budget stopped before an epoch: runs, no row
    driver_lines: list[str] = field(default_factory=list)
    replay_lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_tracking_outage(minutes: float = 3.0, trials: int = 200, epochs: int = 4, outage_s: float = 60.0,
                        timeout_s: float = 1800.0) -> Outage:
    """Phase 1 of `minutes` (Tune's time budget; up to `trials` trials of `epochs` epochs)
    against a tracking server that is killed after the first reported epoch and started again
    `outage_s` later: the phase is still running when the server is back (at 90-150 s), so that
    its own replay is what is measured."""
    work = Path(tempfile.mkdtemp(prefix="csout"))  # short: Ray's socket paths live under it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_TMPDIR": str(work / "ray")}
    (work / "space.yaml").write_text(SPACE.format(trials=trials, epochs=epochs, minutes=minutes), encoding="utf-8")
    outage, started = Outage(budget_minutes=minutes, epochs=epochs, outage_s=outage_s), time.time()
    (port,) = free_ports(1)
    server = _start_server(work, port, env, "server0.log")
    driver = None
    try:
        _wait_until_answering(port, server)
        driver, log = _start_phase(work, env, port)
        began = time.time()
        if not wait_for_line(log, EPOCH_LINE, driver, timeout_s):
            outage.failures.append(f"the phase ended (exit {driver.poll()}) before reporting an epoch")
        else:
            _kill_group(server)
            outage.down_at_s = round(time.time() - began, 1)
            ended = _wait(driver, outage_s, kill=False)
            time.sleep(max(0.0, outage.down_at_s + outage_s - (time.time() - began)))
            server = _start_server(work, port, env, "server1.log")
            _wait_until_answering(port, server)
            outage.back_at_s = round(time.time() - began, 1)
            if ended is not None:  # the phase ended while the server was down
                outage.phase_ended_at_s = ended - began
        outage.exit_code = _wait(driver, timeout_s)
        outage.phase_ended_at_s = round(outage.phase_ended_at_s or (time.time() - began), 1)
        outage.driver_lines = [line for line in log.read_text(errors="replace").splitlines()
                               if line.startswith("clipsearch: MLflow:")]
        _replay_if_left(outage, work, env, port)
        _count(outage, work, port)
    finally:
        outage.seconds = round(time.time() - started, 1)
        if driver is not None and driver.poll() is None:
            _kill_group(driver)
        _kill_group(server)
        shutil.rmtree(work, ignore_errors=True)
    return outage


def _start_server(work: Path, port: int, env: dict, log_name: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{work / 'server.db'}",
            "--artifacts-destination", str(work / "artifacts")]
    with open(work / log_name, "w") as log:
        return subprocess.Popen(argv, env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_until_answering(port: int, server: subprocess.Popen) -> None:
    import urllib.request

    deadline = time.time() + SERVER_READY_S
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({server.returncode}) before answering on port {port}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer on port {port} within {SERVER_READY_S:.0f} s")


def _uri(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _start_phase(work: Path, env: dict, port: int) -> tuple[subprocess.Popen, Path]:
    log = work / "phase.log"
    argv = [sys.executable, "-m", "clipsearch.cli", "phase1", "--space", "space.yaml", "--name", EXPERIMENT,
            "--tracking-uri", _uri(port)]
    with open(log, "w") as stderr:
        driver = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                  start_new_session=True)
    return driver, log


def _wait(driver: subprocess.Popen, timeout_s: float, kill: bool = True) -> int | float | None:
    """The driver's exit code once it exits within `timeout_s` (-1: killed at the timeout); with
    `kill` False, the time.time() it exited at, or None when it is still running."""
    try:
        code = driver.wait(timeout_s)
    except subprocess.TimeoutExpired:
        if not kill:
            return None
        _kill_group(driver)
        return -1
    return code if kill else time.time()


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process's session (started with start_new_session: only what it started)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _replay_if_left(outage: Outage, work: Path, env: dict, port: int) -> None:
    from ..tracking_outbox import PENDING_FILE

    phase_dir = work / "results" / EXPERIMENT / PHASE
    if not (phase_dir / PENDING_FILE).exists():
        outage.replayed_by = "the phase"
        return
    outage.replayed_by = "clipsearch mlflow replay"
    done = subprocess.run([sys.executable, "-m", "clipsearch.cli", "mlflow", "replay", str(phase_dir)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=600)
    outage.replay_exit_code = done.returncode
    outage.replay_lines = done.stderr.strip().splitlines()[-5:]


def _count(outage: Outage, work: Path, port: int) -> None:
    """trials.csv against the server's runs: every way they disagree is a failure."""
    from ..results import read_trials_csv
    from ..tracking import client as tracking_client
    from ..tracking_outbox import PENDING_FILE

    phase_dir = work / "results" / EXPERIMENT / PHASE
    failures = outage.failures
    if outage.exit_code != 0:
        failures.append(f"phase exit {outage.exit_code}")
    if (phase_dir / PENDING_FILE).exists():
        outage.calls_left_queued = len((phase_dir / PENDING_FILE).read_text().splitlines())
        failures.append(f"{outage.calls_left_queued} MLflow call(s) still queued")
    if not (phase_dir / "trials.csv").exists():
        failures.append("no trials.csv")
        return
    rows = read_trials_csv(phase_dir / "trials.csv")
    client = tracking_client(_uri(port))
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], max_results=10000)
    parents = [r for r in runs if r.data.tags.get("clipsearch.phase") == PHASE]
    children = [r for r in runs if r.data.tags.get("clipsearch.trial_id")]
    outage.rows, outage.child_runs = len(rows), len(children)
    outage.runs_left_running = sum(r.info.status == "RUNNING" for r in runs)
    if outage.runs_left_running:
        failures.append(f"{outage.runs_left_running} run(s) left RUNNING")
    if len(parents) != 1 or parents[0].info.status != "FINISHED":
        failures.append(f"parent runs: {[p.info.status for p in parents]}, expected one FINISHED")
    elif {"trials.csv", "best.json"} - {a.path for a in client.list_artifacts(parents[0].info.run_id)}:
        failures.append("the parent run lacks trials.csv or best.json")
    if len(rows) < 2:
        failures.append(f"{len(rows)} row(s) in trials.csv")
    by_trial = {}
    for run in children:
        by_trial.setdefault(run.data.tags["clipsearch.trial_id"], []).append(run)
    for row in rows:
        failures += _disagreements(client, row, by_trial.get(row["trial_id"], []))
    # trials.csv leaves out a trial the budget stopped before its first epoch; its run, opened
    # when the trial started, must have ended too, with nothing logged
    extra = set(by_trial) - {row["trial_id"] for row in rows}
    outage.runs_without_a_row = len(extra)
    logged = sorted(t for t in extra for run in by_trial[t] if run.data.metrics or run.info.status != "FINISHED")
    if logged:
        failures.append(f"MLflow runs with metrics or not FINISHED of trials not in trials.csv: {logged}")


def _disagreements(client, row: dict, runs: list) -> list[str]:
    trial = row["trial_id"]
    if len(runs) != 1:
        return [f"trial {trial}: {len(runs)} MLflow runs"]
    run = runs[0]
    expected = "FINISHED" if row["status"] == "TERMINATED" else "FAILED"
    found = []
    if run.info.status != expected:
        found.append(f"trial {trial}: run {run.info.status}, trials.csv {row['status']}")
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "objective"))
    steps = [step for step, _ in history]
    if steps != list(range(1, int(row["epochs"]) + 1)):
        found.append(f"trial {trial}: objective logged at steps {steps}, trials.csv has {row['epochs']} epoch(s)")
    elif abs(history[-1][1] - float(row["objective"])) > 1e-6 * max(1.0, abs(float(row["objective"]))):
        found.append(f"trial {trial}: last objective {history[-1][1]} in MLflow, {row['objective']} in trials.csv")
    if not run.data.params:
        found.append(f"trial {trial}: no params")
    return found
