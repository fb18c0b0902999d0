"""Goodput and the platform's overhead per trial: the quick protocol's phase 1 trials through
Ray Tune and through train() in a loop, measured in one run.

Goodput is the share of the wall time spent in training steps and evaluations (the
`train_seconds` and `eval_seconds` train() reports for every epoch); everything else is
overhead: starting a process and importing torch, setting up the data and the model, Ray's
actors and bookkeeping, copying each epoch's checkpoint into the experiment folder, the MLflow
child run on the driver. Each variant runs the same `trials` configs (phase1_quick.yaml's data
fraction and epochs, one learning rate each), one at a time:

- in-process: train() in a loop, in a fresh Python process started for the benchmark, so that
  it pays the imports and the data set-up once, as a reused Ray actor does;
- Ray Tune with reuse_actors=True (what the phases use), and with a fresh actor per trial.

Starting the Ray cluster is measured apart: a phase pays it once.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..bench.common import environment, write_result
from ..config import read_base
from .space import Base, default_space_path, load_space

VARIANTS = ("in_process", "tune_fresh_actors", "tune_reuse_actors")
LABELS = {"in_process": "in-process train() loop", "tune_fresh_actors": "Ray Tune, a fresh actor per trial",
          "tune_reuse_actors": "Ray Tune, reuse_actors=True"}


def _configs(trials: int, epochs: int | None) -> tuple[dict, list[float]]:
    """What all trials share (a quick phase 1 trial's budget, one thread, as the phase runs
    them) and one learning rate per trial."""
    constants = load_space(default_space_path("phase1", quick=True), "phase1").constants
    shared = {"data.fraction": constants["data.fraction"], "train.epochs": epochs or constants["train.epochs"],
              "train.threads": 1, "loss.name": "sogclr"}
    return shared, [1e-3 * 2 ** (i % 4) for i in range(trials)]


def _productive(history: list[dict]) -> tuple[float, float]:
    """(training seconds, evaluation seconds) of one trial's epochs."""
    return (sum(float(m.get("train_seconds") or 0.0) for m in history),
            sum(float(m.get("eval_seconds") or 0.0) for m in history))


# ------------------------------------------------------------------------------ variants

def run_loop(shared: dict, lrs: list[float], workdir: str) -> dict:
    """The in-process variant's body (run in its own process by `_in_process`)."""
    from ..train import train

    raw, defaults, _ = read_base("quick")
    base = Base(raw, defaults, "quick")
    train_s = eval_s = 0.0
    for i, lr in enumerate(lrs):
        history: list[dict] = []
        cfg = base.config({**shared, "optimizer.lr": lr}, "bench")
        train(cfg, report=lambda m, c: history.append(m), run_dir=Path(workdir) / f"loop{i}")
        t, e = _productive(history)
        train_s, eval_s = train_s + t, eval_s + e
    return {"train_seconds": train_s, "eval_seconds": eval_s}


def _in_process(shared: dict, lrs: list[float], workdir: Path) -> dict:
    code = ("import json, sys; from clipsearch.tune.bench import run_loop; "
            "print(json.dumps(run_loop(*json.loads(sys.argv[1]))))")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, json.dumps([shared, lrs, str(workdir)])],
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the in-process loop failed: {done.stderr.strip().splitlines()[-1:]}")
    return {"wall": wall, **json.loads(done.stdout.strip().splitlines()[-1])}


def _through_tune(base: Base, shared: dict, lrs: list[float], workdir: Path, reuse: bool, tag: str) -> dict:
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from .. import tracking
    from .callbacks import MLflowTrialRuns
    from .trainable import run_trial

    uri = tracking.default_tracking_uri(workdir)
    client = tracking.client(uri)
    exp_id = tracking.experiment_id(client, uri, "bench")
    parent = tracking.phase_run(client, exp_id, "bench", tag, {})
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base), {"cpu": 1})
    tuner = tune.Tuner(
        trainable, param_space={**shared, "optimizer.lr": tune.grid_search(lrs)},
        tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator(max_concurrent=1), reuse_actors=reuse),
        run_config=tune.RunConfig(name=tag, storage_path=str(workdir / "ray"), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  callbacks=[MLflowTrialRuns(uri, exp_id, parent)]))
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        results = tuner.fit()
    wall = time.perf_counter() - started
    tracking.end_run(client, parent, "FINISHED")
    if results.errors:
        raise RuntimeError(f"benchmark trials failed: {results.errors[0]}")
    train_s = eval_s = 0.0
    for result in results:
        t, e = _productive(result.metrics_dataframe.to_dict("records"))
        train_s, eval_s = train_s + t, eval_s + e
    return {"wall": wall, "train_seconds": train_s, "eval_seconds": eval_s}


def run_tune_benchmark(trials: int = 4, epochs: int | None = None, rounds: int = 2,
                       out_dir: Path = Path("results/benchmarks")) -> Path:
    """Each round runs the three variants, in reverse order every other round, so that the load
    of a shared machine falls on all of them alike; the figures are medians over rounds."""
    import ray

    raw, defaults, _ = read_base("quick")
    base = Base(raw, defaults, "quick")
    shared, lrs = _configs(trials, epochs)
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="clipsearch-bench-") as tmp:
        workdir = Path(tmp)
        started = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        ray_start = time.perf_counter() - started
        try:
            for r in range(rounds):
                for variant in VARIANTS if r % 2 == 0 else reversed(VARIANTS):
                    run = workdir / f"{variant}-{r}"
                    if variant == "in_process":
                        runs[variant].append(_in_process(shared, lrs, run))
                    else:
                        reuse = variant == "tune_reuse_actors"
                        runs[variant].append(_through_tune(base, shared, lrs, run, reuse, variant))
                    print(f"bench tune: round {r + 1}, {LABELS[variant]}: {runs[variant][-1]['wall']:.1f} s",
                          file=sys.stderr)
        finally:
            ray.shutdown()
    return _write(out_dir, trials, shared, rounds, runs, ray_start)


# ------------------------------------------------------------------------------ figures

def summarise(runs: dict[str, list[dict]], trials: int) -> dict[str, dict]:
    """Per variant, medians over rounds: wall seconds, goodput (training + evaluation seconds /
    wall), the share evaluation takes, overhead per trial (wall - productive) / trials, and the
    extra seconds per trial against the in-process loop."""
    out = {}
    for variant, rounds in runs.items():
        wall = statistics.median(r["wall"] for r in rounds)
        productive = statistics.median(r["train_seconds"] + r["eval_seconds"] for r in rounds)
        evaluation = statistics.median(r["eval_seconds"] for r in rounds)
        out[variant] = {"wall_seconds": wall, "goodput": productive / wall, "eval_share": evaluation / wall,
                        "overhead_per_trial_s": (wall - productive) / trials,
                        "wall_seconds_per_round": [r["wall"] for r in rounds]}
    loop = out["in_process"]["wall_seconds"]
    for variant in out:
        out[variant]["extra_per_trial_vs_in_process_s"] = (out[variant]["wall_seconds"] - loop) / trials
    return out


def _write(out_dir: Path, trials: int, shared: dict, rounds: int, runs: dict[str, list[dict]],
           ray_start: float) -> Path:
    figures = summarise(runs, trials)
    epochs = shared["train.epochs"]
    rows = [(LABELS[v], trials, f"{f['wall_seconds']:.1f}", " / ".join(f"{s:.1f}" for s in f["wall_seconds_per_round"]),
             f"{100 * f['goodput']:.0f}%", f"{100 * f['eval_share']:.0f}%", f"{f['overhead_per_trial_s']:.1f}",
             f"{f['extra_per_trial_vs_in_process_s']:+.1f}") for v, f in figures.items()]
    rows.append(("ray.init (local, once per command)", "", f"{ray_start:.1f}", "", "", "", "", ""))
    result = {
        "environment": environment(),
        "command": f"clipsearch bench tune --trials {trials} --epochs {epochs} --rounds {rounds}",
        "setup": {"trials": trials, "epochs": epochs, "rounds": rounds, "config": shared, "preset": "quick",
                  "concurrency": 1, "mlflow": "sqlite child run per trial", "checkpoint": "every epoch",
                  "in_process": "train() in a loop in a fresh Python process"},
        "runs": runs, "figures": figures, "ray_init_seconds": ray_start,
        # the keys of earlier versions of this file, which results/benchmarks/README.md reads
        "median_seconds": {v: f["wall_seconds"] for v, f in figures.items()},
    }
    path = write_result(out_dir, "tune", result, rows,
                        ("variant", "trials", "median wall s", "wall s per round", "goodput", "evaluation share",
                         "overhead per trial s", "s per trial over in-process"))
    reuse = figures["tune_reuse_actors"]
    note = ["", f"Each trial: {epochs} epochs on {shared['data.fraction']:.0%} of the embedded pairs (a quick phase 1 "
            "trial), one thread. Goodput: training steps + evaluations / wall time; overhead per trial: the rest, "
            "divided by the trials (process start and imports, data set-up, Ray, checkpoints, MLflow).",
            f"With actor reuse: goodput {100 * reuse['goodput']:.0f}% (goal >= 80%), "
            f"{reuse['extra_per_trial_vs_in_process_s']:+.1f} s per trial against the in-process loop (goal <= 1 s)."]
    path.write_text(path.read_text() + "\n".join(note) + "\n", encoding="utf-8")
    return path
