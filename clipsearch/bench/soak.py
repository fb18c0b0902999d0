"""The soak: one quick phase 1 of many cheap trials run to its end, the driver's resident memory
sampled every second. What is checked is what a long search would suffer from: a driver whose
memory grows trial by trial (results, callbacks, MLflow clients kept alive), trials missing or
run twice, MLflow runs left RUNNING.

The driver is the `clipsearch phase1` process itself; Ray's own daemons (raylet, GCS) and the
trial workers are other processes and are not counted here. The phase runs in a subprocess with
its own work folder and Ray temp folder, both removed at the end.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .kill_loop import SPACE, _start, kill_tree, phase1_outcome

#: the bound the soak is held to (issue 10, item 6). 3 GiB is far above a healthy driver (a
#: few hundred MiB) yet below what 2-core CI machines can spare; 20% growth between the 25th
#: and the last trial separates a leak (growth that scales with trials) from warm-up (the
#: first trials load torch, MLflow, the dataset).
PEAK_RSS_BOUND = 3 * 1024**3
GROWTH_BOUND = 0.20
DONE_LINE = ": done after "  # ProgressLines' line for a completed trial
MIB = 1024**2


@dataclass
class Soak:
    """What one soak run saw: its exit, its trials, and (seconds, RSS bytes, trials done) samples."""

    trials_configured: int
    exit_code: int | None = None
    seconds: float = 0.0
    rows: int = 0
    distinct_trials: int = 0
    terminated: int = 0
    errored: int = 0
    runs_left_running: int = 0
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_soak(trials: int = 100, epochs: int = 1, timeout_s: float = 3600.0) -> Soak:
    """A quick phase 1 of `trials` trials of `epochs` epoch(s) on 5% of the data, two at a time,
    its driver's RSS sampled every second until it exits (or `timeout_s` passes)."""
    work = Path(tempfile.mkdtemp(prefix="cssoak"))  # short: Ray's socket paths live under it
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_TMPDIR": str(work / "ray")}
    (work / "space.yaml").write_text(SPACE.format(trials=trials, epochs=epochs), encoding="utf-8")
    soak, started = Soak(trials_configured=trials), time.time()
    try:
        driver, log = _start(work, {**os.environ, **env}, resume=False, number=0)
        soak.samples = _sample_until_exit(driver, log, started, timeout_s)
        soak.exit_code = driver.returncode
        soak.seconds = time.time() - started
        _count(soak, work / "results")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return soak


def _sample_until_exit(driver: subprocess.Popen, log: Path, started: float,
                       timeout_s: float) -> list[tuple[float, int, int]]:
    samples, done = [], 0
    with open(log, errors="replace") as lines:
        while driver.poll() is None:
            if time.time() - started > timeout_s:
                kill_tree(driver)
                break
            done += sum(DONE_LINE in line for line in lines.readlines())
            rss = rss_bytes(driver.pid)
            if rss is not None:
                samples.append((round(time.time() - started, 1), rss, done))
            time.sleep(1.0)
    return samples


def rss_bytes(pid: int) -> int | None:
    """Resident set size from /proc/PID/status (VmRSS, in kB); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _count(soak: Soak, results: Path) -> None:
    outcome = phase1_outcome(results)
    if outcome is None:
        soak.notes.append("no trials.csv: the phase did not finish")
        return
    rows, runs = outcome
    soak.rows = len(rows)
    soak.distinct_trials = len({r["trial_id"] for r in rows})
    soak.terminated = sum(r["status"] == "TERMINATED" for r in rows)
    soak.errored = sum(r["status"] == "ERROR" for r in rows)
    soak.runs_left_running = sum(r.info.status == "RUNNING" for r in runs)


def rss_summary(samples: list[tuple[float, int, int]], trials: int) -> dict:
    """The RSS curve in MiB: at the first reported trial, at 25/50/75/100% of trials done, the
    peak, the last sample; growth from 25% to 100% (fraction) and per 10 trials over that span."""
    if not samples:
        return {"samples": 0}
    at = {f"at_{p}pct": _rss_when_done(samples, math.ceil(trials * p / 100)) for p in (25, 50, 75, 100)}
    start = _rss_when_done(samples, 1)
    quarter, full = at["at_25pct"], at["at_100pct"]
    span = trials - math.ceil(trials * 0.25)
    growth = None if quarter is None or full is None else (full - quarter) / quarter
    return {"samples": len(samples), "start_mib": _mib(start), **{k: _mib(v) for k, v in at.items()},
            "peak_mib": _mib(max(rss for _, rss, _ in samples)), "last_mib": _mib(samples[-1][1]),
            "growth_25_to_100pct": None if growth is None else round(growth, 4),
            "growth_per_10_trials_mib": None if growth is None or span <= 0
            else round((full - quarter) / MIB / span * 10, 2)}


def _rss_when_done(samples: list[tuple[float, int, int]], count: int) -> int | None:
    """Median RSS of the (up to 5) samples from the moment `count` trials were done: one sample
    can catch a transient (a result being written), a few give the level."""
    index = next((i for i, (_, _, done) in enumerate(samples) if done >= count), None)
    return None if index is None else int(statistics.median(rss for _, rss, _ in samples[index:index + 5]))


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / MIB, 1)


def check(soak: Soak, summary: dict) -> list[str]:
    """Every way the soak falls short of its requirement and bound; empty when it passes."""
    n = soak.trials_configured
    failures = [text for bad, text in (
        (soak.exit_code != 0, f"exit {soak.exit_code}"),
        (soak.rows != n or soak.distinct_trials != n, f"{soak.rows} rows, {soak.distinct_trials} distinct trials of {n}"),
        (soak.terminated != n, f"{soak.terminated} TERMINATED, {soak.errored} ERROR of {n}"),
        (soak.runs_left_running, f"{soak.runs_left_running} MLflow run(s) left RUNNING"),
    ) if bad]
    peak, growth = summary.get("peak_mib"), summary.get("growth_25_to_100pct")
    if peak is None or peak * MIB >= PEAK_RSS_BOUND:
        failures.append(f"peak driver RSS {peak} MiB, bound < {PEAK_RSS_BOUND // MIB} MiB")
    if growth is None or growth >= GROWTH_BOUND:
        failures.append(f"driver RSS growth 25%->100% of trials {growth}, bound < {GROWTH_BOUND}")
    return failures


def rss_curve(samples: list[tuple[float, int, int]], trials: int) -> list[dict]:
    """The driver's RSS each time 10 more trials were done (the per-second samples are not kept)."""
    return [{"trials_done": n, "rss_mib": _mib(_rss_when_done(samples, n))} for n in range(10, trials + 1, 10)]
