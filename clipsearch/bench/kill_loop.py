"""Faults a phase must survive, driven for real: the driver SIGKILLed at random moments of a
quick phase 1, several times in a row, each time followed by `--resume`; and a trial's worker
process SIGKILLed mid-epoch. What is counted is what a user would lose: trials not completed,
trials run twice, results files left half-written, MLflow runs left RUNNING.

A driver killed before Tune's first snapshot leaves nothing to restore (phases.py refuses that
resume with exit 2), so every kill here waits until this driver has reported an epoch: the
random moment is drawn after that. The phases run in subprocesses, with their own Ray temp
folder, removed at the end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: the params of the faults' tiny phase 1 (two losses x two optimizers, 5% of the pairs), a
#: format string like the spaces it ends (KEY: EPOCHS)
TINY_PARAMS = """params:
  loss.name: {{choice: [sogclr, isogclr]}}
  optimizer.name: {{choice: [adamw, radam]}}
  optimizer.lr: {{loguniform: [1.0e-3, 1.0e-2]}}
  data.fraction: 0.05
  train.epochs: {epochs}
"""
SPACE = """base: quick
num_samples: {trials}
max_concurrent: 2
asha: {{grace_period: 1, reduction_factor: 2}}
""" + TINY_PARAMS
EPOCH_LINE = ": epoch "  # ProgressLines' line for a reported epoch
PHASE_FILES = ("trials.csv", "best.json", "phase.json")


@dataclass
class KillLoop:
    """What happened over one phase killed `kills` times and resumed each time."""

    trials_configured: int
    kills_done: int = 0
    worker_kills: int = 0
    resumes: int = 0
    trials_completed: int = 0
    trials_repeated: int = 0
    half_written_files: list[str] = field(default_factory=list)
    runs_left_running: int = 0
    killed_runs_not_closed: int = 0
    trials_without_one_finished_run: int = 0
    kill_moments_s: list[float] = field(default_factory=list)  # seconds after the run's first epoch
    final_exit_code: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Trials not completed plus repeats plus half-written files plus unclosed runs."""
        return (self.trials_configured - self.trials_completed + self.trials_repeated + len(self.half_written_files)
                + self.runs_left_running + self.killed_runs_not_closed + self.trials_without_one_finished_run)


def run_kill_loop(kills: int = 3, trials: int = 4, epochs: int = 2, kill_worker: bool = True, seed: int = 0,
                  max_wait_s: float = 20.0, timeout_s: float = 1800.0) -> KillLoop:
    """Phase 1 of `trials` trials, its driver SIGKILLed `kills` times at a random moment (up to
    `max_wait_s` after this driver's first reported epoch) and resumed; with `kill_worker`, a
    trial's worker is SIGKILLed once, at the first run's first epoch. Returns the counts."""
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="csrel"))  # short: Ray's socket paths live under it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_TMPDIR": str(work / "ray")}
    (work / "space.yaml").write_text(SPACE.format(trials=trials, epochs=epochs), encoding="utf-8")
    loop, started = KillLoop(trials_configured=trials), time.time()
    try:
        for attempt in range(kills + 1):
            driver, log = _start(work, env, resume=attempt > 0, number=attempt)
            loop.resumes += attempt > 0
            last = attempt == kills
            if not wait_for_line(log, EPOCH_LINE, driver, timeout_s):
                loop.final_exit_code = driver.wait()
                loop.notes.append(f"run {attempt} ended (exit {loop.final_exit_code}) before reporting an epoch")
                break
            if kill_worker and attempt == 0 and _kill_a_worker(driver.pid):
                loop.worker_kills += 1  # the trial retries from its checkpoint; the checks below cover it
            if last:
                loop.final_exit_code = _wait(driver, timeout_s)
                break
            moment = rng.uniform(0, max_wait_s)
            time.sleep(moment)
            if driver.poll() is not None:  # the phase finished first: nothing left to kill
                loop.final_exit_code = driver.returncode
                loop.notes.append(f"run {attempt} finished before its kill")
                break
            kill_tree(driver)
            loop.kills_done += 1
            loop.kill_moments_s.append(round(moment, 1))
            loop.half_written_files += _half_written(work / "results" / "k" / "phase1")
        _count_results(loop, work / "results")
    finally:
        loop.seconds = time.time() - started
        shutil.rmtree(work, ignore_errors=True)
    return loop


def _start(work: Path, env: dict, resume: bool, number: int) -> tuple[subprocess.Popen, Path]:
    log = work / f"run{number}.log"
    argv = [sys.executable, "-m", "clipsearch.cli", "phase1", "--space", "space.yaml", "--name", "k"]
    with open(log, "w") as stderr:
        driver = subprocess.Popen(argv + (["--resume"] if resume else []), cwd=work, env=env,
                                  stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    return driver, log


def wait_for_line(log: Path, text: str, driver: subprocess.Popen, timeout_s: float) -> bool:
    """Whether `text` shows in the driver's log within `timeout_s`, while the driver runs."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and driver.poll() is None:
        if text in log.read_text(errors="replace"):
            return True
        time.sleep(0.5)
    return False


def _wait(driver: subprocess.Popen, timeout_s: float) -> int:
    try:
        return driver.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_tree(driver)
        return -1


def descendants(pid: int) -> set[int]:
    """Process ids under `pid` (Linux /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (ValueError, OSError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def kill_tree(driver: subprocess.Popen) -> None:
    """SIGKILL the driver, then (by pid) what it started that outlives it: its Ray cluster."""
    family = descendants(driver.pid)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _kill_a_worker(driver_pid: int) -> bool:
    """SIGKILL one process running a trial (Ray names it after the trainable: ray::...)."""
    for pid in sorted(descendants(driver_pid)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("ray::") and ("ImplicitFunc" in cmdline or "_Inner" in cmdline or "run_trial" in cmdline):
            os.kill(pid, signal.SIGKILL)
            return True
    return False


def _half_written(phase_dir: Path) -> list[str]:
    """The phase's results files that exist but do not parse whole (or temp files left behind)."""
    bad = [str(p) for p in phase_dir.glob(".*.tmp-*")]
    for name in PHASE_FILES:
        path = phase_dir / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            if name.endswith(".json"):
                json.loads(text)
            elif not text.endswith("\n"):
                raise ValueError("no final newline")
        except ValueError:
            bad.append(str(path))
    return bad


def phase1_outcome(results: Path) -> tuple[list[dict], list] | None:
    """trials.csv's rows and every MLflow run of the experiment "k" a bench phase 1 wrote under
    `results`; None when the phase never finished (no trials.csv)."""
    from ..tracking import client as tracking_client
    from ..results import read_trials_csv

    trials_csv = results / "k" / "phase1" / "trials.csv"
    if not trials_csv.exists():
        return None
    client = tracking_client(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("k")
    return read_trials_csv(trials_csv), client.search_runs([experiment.experiment_id], max_results=10000)


def _count_results(loop: KillLoop, results: Path) -> None:
    outcome = phase1_outcome(results)
    if outcome is None:
        loop.notes.append("the phase never finished: no trials.csv")
        return
    rows, runs = outcome
    ids = [r["trial_id"] for r in rows]
    loop.trials_completed = len({r["trial_id"] for r in rows if r["status"] == "TERMINATED"})
    loop.trials_repeated = len(ids) - len(set(ids))
    loop.runs_left_running = sum(r.info.status == "RUNNING" for r in runs)
    # a run of a trial Tune never recorded (its driver died first) must be closed, not left open
    loop.killed_runs_not_closed = sum(r.data.tags.get("clipsearch.trial_id") not in (None, *ids)
                                      and r.info.status not in ("KILLED", "FAILED") for r in runs)
    finished = [r.data.tags.get("clipsearch.trial_id") for r in runs if r.info.status == "FINISHED"]
    loop.trials_without_one_finished_run = sum(finished.count(trial_id) != 1 for trial_id in set(ids))
