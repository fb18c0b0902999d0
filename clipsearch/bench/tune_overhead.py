"""Goodput and the platform's overhead per trial: the quick protocol's phase 1 trials through
Ray Tune and through train() in a loop, measured in one run.

Goodput is the share of the wall time spent in training steps and evaluations (the
`train_seconds` and `eval_seconds` train() reports for every epoch); everything else is
overhead: starting a process and importing torch, setting up the data and the model, Ray's
actors and bookkeeping, copying each epoch's checkpoint into the experiment folder, the MLflow
child run on the driver. Each variant runs the same trials (search_spaces/bench_tune/trials.yaml:
a quick phase 1 trial's data fraction and epochs, one learning rate each), one at a time:

- in-process: train() in a loop, in a fresh Python process started for the benchmark, so that
  it pays the imports and the data set-up once, as a reused Ray actor does;
- Ray Tune with reuse_actors=True (what the phases use), and with a fresh actor per trial: a
  grid phase built and run by clipsearch.tune (grid_plan, execute), so that the trials pay what
  a phase's trials pay: its callbacks, MLflow runs, checkpoints and history. Their productive
  seconds are read back from the phase's own history/trial_ID.jsonl.

Paid once per command or phase, and measured apart: starting the Ray cluster, and a phase's
end (the ranking, trials.csv, best.json; no report), which follows its last epoch's result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import tracking
from ..results import HISTORY_DIR, TRIALS_CSV, read_history, read_trials_csv
from ..tune import cluster
from ..tune.phases import Options, grid_plan
from ..tune.runner import execute
from ..tune.space import SHIPPED_SPACES, Base, SearchSpace, default_space_path, load_space
from .common import environment, write_result

SPACE = SHIPPED_SPACES / "bench_tune" / "trials.yaml"
LR = "optimizer.lr"  # the space's one grid axis: a trial's learning rate
VARIANTS = ("in_process", "tune_fresh_actors", "tune_reuse_actors")
LABELS = {"in_process": "in-process train() loop", "tune_fresh_actors": "Ray Tune, a fresh actor per trial",
          "tune_reuse_actors": "Ray Tune, reuse_actors=True"}


def bench_space(trials: int, epochs: int | None = None) -> SearchSpace:
    """The shipped space with TRIALS learning rates (the file's, taken in turn) and, when given,
    EPOCHS epochs a trial."""
    space = load_space(SPACE, "grid", {"train.epochs": epochs} if epochs else None)
    (axis,) = space.params
    lrs = tuple(axis.values[i % len(axis.values)] for i in range(trials))
    space.params = [dataclasses.replace(axis, values=lrs)]
    return space


def quick_phase1_trials_per_actor() -> int:
    """How many trials one reused actor of the quick phase 1 runs: its trials over the ones it runs
    at a time (16 / 2). A process's start and imports (torch, timm, transformers: about 6 s on a
    2-core CPU) are paid once per actor, so this is the share of them a quick phase 1 trial pays;
    the benchmark's trials run on one actor, and its default is this many of them."""
    space = load_space(default_space_path("phase1", quick=True), "phase1")
    return math.ceil(space.num_samples / space.max_concurrent)


def trial_configs(space: SearchSpace) -> list[dict]:
    """Each trial's flat config: the space's constants and its learning rate."""
    return [{**space.constants, LR: lr} for lr in space.grid_axes()[LR]]


def _productive(history: list[dict]) -> tuple[float, float]:
    """(training seconds, evaluation seconds) of one trial's epochs."""
    return (sum(float(m.get("train_seconds") or 0.0) for m in history),
            sum(float(m.get("eval_seconds") or 0.0) for m in history))


# ------------------------------------------------------------------------------ variants

def run_loop(base: dict, configs: list[dict], workdir: str) -> dict:
    """The in-process variant's body (run in its own process by `_in_process`)."""
    from ..train import train

    trials_base = Base.from_json(base)
    train_s = eval_s = 0.0
    for i, values in enumerate(configs):
        history: list[dict] = []
        cfg = trials_base.config(values, "bench tune")
        train(cfg, report=lambda m, c: history.append(m), run_dir=Path(workdir) / f"loop{i}")
        t, e = _productive(history)
        train_s, eval_s = train_s + t, eval_s + e
    return {"train_seconds": train_s, "eval_seconds": eval_s}


def _in_process(space: SearchSpace, workdir: Path) -> dict:
    code = ("import json, sys; from clipsearch.bench.tune_overhead import run_loop; "
            "print(json.dumps(run_loop(*json.loads(sys.argv[1]))))")
    args = json.dumps([space.base.to_json(), trial_configs(space), str(workdir)])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the in-process loop failed: {done.stderr.strip().splitlines()[-1:]}")
    return {"wall": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def _through_tune(space: SearchSpace, tracking_uri: str, workdir: Path, reuse: bool, tag: str) -> dict:
    """The trials as a grid phase of experiment TAG. Its wall time runs from the phase's start
    to its last epoch's result (the history line the driver appends for it); the phase's end
    after that is `phase_end_seconds`."""
    opts = Options(name=tag, quick=True, results=workdir, tracking_uri=tracking_uri, reuse_actors=reuse,
                   max_failures=0)
    plan = grid_plan(space, opts, (workdir / tag).resolve(), "bench-tune")
    started = time.time()  # wall-clock time, as the history files' modification times are
    execute(plan)
    ended = time.time()
    rows = read_trials_csv(plan.phase_dir / TRIALS_CSV)
    failed = [row for row in rows if row["status"] != "TERMINATED"]
    if failed:
        raise RuntimeError(f"benchmark trial {failed[0]['trial_id']} failed: {failed[0].get('error')}")
    histories = [read_history(plan.phase_dir / HISTORY_DIR, row["trial_id"]) for row in rows]
    last_epoch = max(path.stat().st_mtime for path in (plan.phase_dir / HISTORY_DIR).iterdir())
    productive = [_productive(history) for history in histories]
    return {"wall": last_epoch - started, "train_seconds": sum(t for t, _ in productive),
            "eval_seconds": sum(e for _, e in productive), "phase_end_seconds": ended - last_epoch}


def run_tune_benchmark(trials: int | None = None, epochs: int | None = None, rounds: int = 2,
                       out_dir: Path = Path("results/benchmarks")) -> Path:
    trials = trials or quick_phase1_trials_per_actor()
    space = bench_space(trials, epochs)
    with tempfile.TemporaryDirectory(prefix="clipsearch-bench-") as tmp:
        workdir = Path(tmp)
        uri = tracking.default_tracking_uri(workdir)
        # the MLflow store is created once, before any timing: a phase finds it there
        tracking.experiment_id(tracking.client(uri), uri, "bench-tune")
        started = time.perf_counter()
        with cluster.ray_session(None):
            ray_start = time.perf_counter() - started
            runs = _rounds(space, rounds, workdir, uri)
    return _write(out_dir, trials, space.constants, rounds, runs, ray_start)


def _rounds(space: SearchSpace, rounds: int, workdir: Path, tracking_uri: str) -> dict[str, list[dict]]:
    """Each round runs the three variants, in reverse order every other round, so that the load
    of a shared machine falls on all of them alike; the figures are medians over rounds."""
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        for variant in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
            tag = f"{variant}-{r}"
            if variant == "in_process":
                runs[variant].append(_in_process(space, workdir / tag))
            else:
                reuse = variant == "tune_reuse_actors"
                runs[variant].append(_through_tune(space, tracking_uri, workdir, reuse, tag))
            print(f"bench tune: round {r + 1}, {LABELS[variant]}: {runs[variant][-1]['wall']:.1f} s", file=sys.stderr)
    return runs


# ------------------------------------------------------------------------------ figures

def summarise(runs: dict[str, list[dict]], trials: int) -> dict[str, dict]:
    """Per variant, medians over rounds: wall seconds, goodput (training + evaluation seconds /
    wall), the share evaluation takes, overhead per trial (wall - productive) / trials, and the
    extra seconds per trial against the in-process loop; for a phase, the seconds its end took
    (apart from the trials: a phase pays it once)."""
    out = {}
    for variant, rounds in runs.items():
        wall = statistics.median(r["wall"] for r in rounds)
        productive = statistics.median(r["train_seconds"] + r["eval_seconds"] for r in rounds)
        evaluation = statistics.median(r["eval_seconds"] for r in rounds)
        out[variant] = {"wall_seconds": wall, "goodput": productive / wall, "eval_share": evaluation / wall,
                        "overhead_per_trial_s": (wall - productive) / trials,
                        "wall_seconds_per_round": [r["wall"] for r in rounds]}
        if all("phase_end_seconds" in r for r in rounds):
            out[variant]["phase_end_seconds"] = statistics.median(r["phase_end_seconds"] for r in rounds)
    loop = out["in_process"]["wall_seconds"]
    for variant in out:
        out[variant]["extra_per_trial_vs_in_process_s"] = (out[variant]["wall_seconds"] - loop) / trials
    return out


def _write(out_dir: Path, trials: int, shared: dict, rounds: int, runs: dict[str, list[dict]],
           ray_start: float) -> Path:
    """OUT/tune.json and OUT/tune.md; SHARED: the constants every trial ran with."""
    figures = summarise(runs, trials)
    epochs = shared["train.epochs"]
    rows = [(LABELS[v], trials, f"{f['wall_seconds']:.1f}", " / ".join(f"{s:.1f}" for s in f["wall_seconds_per_round"]),
             f"{100 * f['goodput']:.0f}%", f"{100 * f['eval_share']:.0f}%", f"{f['overhead_per_trial_s']:.1f}",
             f"{f['extra_per_trial_vs_in_process_s']:+.1f}") for v, f in figures.items()]
    rows += [(f"phase end: ranking, trials.csv, best.json (once per phase), {LABELS[v]}", "",
              f"{f['phase_end_seconds']:.1f}", "", "", "", "", "") for v, f in figures.items() if "phase_end_seconds" in f]
    rows.append(("ray.init (local, once per command)", "", f"{ray_start:.1f}", "", "", "", "", ""))
    result = {
        "environment": environment(),
        "command": f"clipsearch bench tune --trials {trials} --epochs {epochs} --rounds {rounds}",
        "setup": {"trials": trials, "epochs": epochs, "rounds": rounds, "config": shared, "preset": "quick",
                  "concurrency": 1, "mlflow": "sqlite child run per trial", "checkpoint": "every epoch",
                  "in_process": "train() in a loop in a fresh Python process",
                  "through_tune": "a grid phase of clipsearch.tune (grid_plan, execute) over the learning rates of "
                                  "search_spaces/bench_tune/trials.yaml; its wall time up to its last epoch's result, "
                                  "its productive seconds from its history/trial_ID.jsonl"},
        "runs": runs, "figures": figures, "ray_init_seconds": ray_start,
        # the keys of earlier versions of this file, which results/benchmarks/README.md reads
        "median_seconds": {v: f["wall_seconds"] for v, f in figures.items()},
    }
    path = write_result(out_dir, "tune", result, rows,
                        ("variant", "trials", "median wall s", "wall s per round", "goodput", "evaluation share",
                         "overhead per trial s", "s per trial over in-process"))
    reuse = figures["tune_reuse_actors"]
    note = ["", f"Each trial: {epochs} epochs on {shared['data.fraction']:.0%} of the embedded pairs (a quick phase 1 "
            f"trial), one thread; {trials} trials one at a time, in one process or one reused actor (a quick "
            f"phase 1 runs {quick_phase1_trials_per_actor()} on each of its actors). Goodput: training steps + "
            "evaluations / wall time; overhead per trial: the rest, divided by the trials (process start and "
            "imports, data set-up, Ray, checkpoints, MLflow).",
            f"With actor reuse: goodput {100 * reuse['goodput']:.0f}% (goal >= 80%), "
            f"{reuse['extra_per_trial_vs_in_process_s']:+.1f} s per trial against the in-process loop (goal <= 1 s)."]
    path.write_text(path.read_text() + "\n".join(note) + "\n", encoding="utf-8")
    return path
