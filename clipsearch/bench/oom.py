"""A trial that runs out of memory, for real: a quick phase 1 of three trials, one at a time, on
a local Ray node whose memory monitor kills above a threshold set a few GiB over the memory this
machine uses when the bench starts; one trial (the radam point) grows past it in its second
epoch, every attempt (clipsearch.bench.faults, CLIPSEARCH_OOM). What must hold is what a user
needs: that trial retried from its checkpoint, then marked errored with "out of memory" and
Ray's figures in trials.csv's `error`, its MLflow run FAILED; the other two trials finished;
the phase exit 0.

One trial at a time, because Ray's threshold is the node's: with two trials on the node its
monitor kills the most recently started task, not necessarily the one growing. The machine is
shared, so the threshold moves with what runs beside the bench: a neighbour's burst during an
ordinary trial would kill that trial too (it retries from its checkpoint), and is written down.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .faults import oom_env
from .kill_loop import _start, _wait, phase1_outcome

SPACE = """base: quick
num_samples: 3
max_concurrent: 1
scheduler: {kind: none}
points:
  - {optimizer.name: adamw, optimizer.lr: 2.0e-3, loss.name: sogclr}
  - {optimizer.name: radam, optimizer.lr: 2.0e-3, loss.name: sogclr}
  - {optimizer.name: adamw, optimizer.lr: 5.0e-3, loss.name: isogclr}
params:
  loss.name: {choice: [sogclr, isogclr]}
  optimizer.name: {choice: [adamw, radam]}
  optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}
  data.fraction: 0.05
  train.epochs: 2
"""
RULE = "optimizer.name=radam@1"  # the second point: killed in epoch 2, after its checkpoint of epoch 1
TRIALS, EPOCHS, MAX_FAILURES = 3, 2, 2
#: above the memory in use when the bench starts: the driver (~1 GiB), Ray's daemons and one
#: trial (~1.5 GiB each) fit under it with room for a neighbour's noise; the growing trial passes it
HEADROOM = 5 * 2**30
GIB = 2**30


@dataclass
class OutOfMemory:
    """What one run saw: the threshold it ran under, the phase's exit, each trial's outcome."""

    threshold: float = 0.0
    total_gib: float = 0.0
    used_gib_at_start: float = 0.0
    exit_code: int | None = None
    seconds: float = 0.0
    rows: int = 0
    terminated: int = 0
    errored: int = 0
    oom_trial: dict = field(default_factory=dict)      # its trials.csv status, num_failures, error
    runs: dict = field(default_factory=dict)          # MLflow run status -> count
    driver_lines: list[str] = field(default_factory=list)  # what the user saw of the growing trial
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def memory_gib() -> tuple[float, float]:
    """(total, in use) in GiB from /proc/meminfo: in use = total - MemAvailable, as Ray counts it."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] / GIB, (info["MemTotal"] - info["MemAvailable"]) / GIB


def run_out_of_memory(timeout_s: float = 1200.0) -> OutOfMemory:
    work = Path(tempfile.mkdtemp(prefix="csoom"))  # short: Ray's socket paths live under it
    total, used = memory_gib()
    result, started = OutOfMemory(total_gib=round(total, 1), used_gib_at_start=round(used, 1)), time.time()
    result.threshold = round(min(0.95, (used + HEADROOM / GIB) / total), 3)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_TMPDIR": str(work / "ray"),
           "RAY_memory_usage_threshold": str(result.threshold), **oom_env(RULE)}
    (work / "space.yaml").write_text(SPACE, encoding="utf-8")
    try:
        driver, log = _start(work, env, resume=False, number=0)
        result.exit_code = _wait(driver, timeout_s)
        result.seconds = round(time.time() - started, 1)
        _count(result, work / "results", log.read_text(errors="replace"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _count(result: OutOfMemory, results: Path, log: str) -> None:
    outcome = phase1_outcome(results)
    if outcome is None:
        result.failures.append(f"the phase did not finish (exit {result.exit_code}): no trials.csv")
        return
    rows, runs = outcome
    result.rows = len(rows)
    result.terminated = sum(r["status"] == "TERMINATED" for r in rows)
    result.errored = sum(r["status"] == "ERROR" for r in rows)
    for run in runs:
        if run.data.tags.get("mlflow.parentRunId"):
            result.runs[run.info.status] = result.runs.get(run.info.status, 0) + 1
    grown = [r for r in rows if r["config"].get("optimizer.name") == "radam"]
    if grown:
        row = grown[0]
        result.oom_trial = {k: row.get(k) for k in ("trial_id", "status", "num_failures", "epochs", "error")}
        result.driver_lines = [line for line in log.splitlines() if f"trial {row['trial_id']}:" in line]
    result.failures = check(result)
    # a neighbour's burst that killed an ordinary trial: it retried, but say so
    result.notes = [f"trial {r['trial_id']} failed {r['num_failures']} time(s) and finished" for r in rows
                    if r["status"] == "TERMINATED" and r.get("num_failures")]


def check(result: OutOfMemory) -> list[str]:
    """Every way the run falls short of what a user needs; empty when it passes."""
    oom = result.oom_trial
    error = oom.get("error") or ""
    return [text for bad, text in (
        (result.exit_code != 0, f"exit {result.exit_code}"),
        (result.rows != TRIALS, f"{result.rows} rows of {TRIALS}"),
        (result.terminated != TRIALS - 1, f"{result.terminated} TERMINATED of the {TRIALS - 1} that fit in memory"),
        (oom.get("status") != "ERROR", f"the growing trial ended {oom.get('status')}"),
        (oom.get("num_failures") != MAX_FAILURES + 1,
         f"the growing trial failed {oom.get('num_failures')} time(s), not 1 + its {MAX_FAILURES} retries"),
        (oom.get("epochs") != 1, f"the growing trial kept {oom.get('epochs')} epoch(s), not its checkpoint's 1"),
        (not error.startswith("out of memory"), f"trials.csv's error does not say out of memory: {error[:200]!r}"),
        (result.runs.get("RUNNING"), f"{result.runs.get('RUNNING')} MLflow trial run(s) left RUNNING"),
        (result.runs != {"FINISHED": TRIALS - 1, "FAILED": 1}, f"MLflow trial runs {result.runs}"),
    ) if bad]

