"""The platform's overhead per trial: the same tiny training runs through Ray Tune and through
train() in a loop, measured in one run.

Each variant runs the same `trials` configs (the quick preset, 10% of the pairs, `epochs`
epochs, one learning rate each) one at a time, so that the only difference is what Tune adds:
starting (or reusing) the trial's actor and importing torch there, reporting each epoch,
copying each epoch's checkpoint into the experiment folder, Tune's own bookkeeping and the
MLflow child run (params, per-epoch metrics) on the driver. Starting the Ray cluster is
measured apart: a phase pays it once. Variants: in-process loop, Tune with a fresh actor per
trial, Tune with reuse_actors=True (what the phases use).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ..bench.common import environment, write_result
from ..config import read_base
from .space import Base


def _configs(trials: int, epochs: int) -> tuple[dict, list[float]]:
    """The settings all trials share, and one learning rate per trial."""
    return {"data.fraction": 0.1, "train.epochs": epochs, "train.threads": 1}, [1e-3 * 2 ** i for i in range(trials)]


def _in_process(base: Base, shared: dict, lrs: list[float], workdir: Path) -> float:
    from ..train import train

    started = time.perf_counter()
    for i, lr in enumerate(lrs):
        cfg = base.config({**shared, "optimizer.lr": lr}, "bench")
        train(cfg, report=lambda m, c: None, run_dir=workdir / f"loop{i}")
    return time.perf_counter() - started


def _through_tune(base: Base, shared: dict, lrs: list[float], workdir: Path, reuse: bool, tag: str) -> float:
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
    seconds = time.perf_counter() - started
    tracking.end_run(client, parent, "FINISHED")
    if results.errors:
        raise RuntimeError(f"benchmark trials failed: {results.errors[0]}")
    return seconds


VARIANTS = ("in_process", "tune_fresh_actors", "tune_reuse_actors")
LABELS = {"in_process": "in-process train() loop", "tune_fresh_actors": "Ray Tune, a fresh actor per trial",
          "tune_reuse_actors": "Ray Tune, reuse_actors=True"}


def run_tune_benchmark(trials: int = 4, epochs: int = 1, rounds: int = 2,
                       out_dir: Path = Path("results/benchmarks")) -> Path:
    """Each round runs the three variants, in reverse order every other round, so that the load
    of a shared machine falls on all of them alike; the figures are medians over rounds."""
    import ray

    raw, defaults, _ = read_base("quick")
    base = Base(raw, defaults, "quick")
    shared, lrs = _configs(trials, epochs)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
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
                        seconds[variant].append(_in_process(base, shared, lrs, run))
                    else:
                        reuse = variant == "tune_reuse_actors"
                        seconds[variant].append(_through_tune(base, shared, lrs, run, reuse, variant))
        finally:
            ray.shutdown()
    return _write(out_dir, trials, epochs, rounds, seconds, ray_start)


def _write(out_dir: Path, trials: int, epochs: int, rounds: int, seconds: dict[str, list[float]],
           ray_start: float) -> Path:
    median = {v: statistics.median(s) for v, s in seconds.items()}
    loop = median["in_process"]
    rows = [(LABELS[v], trials, f"{median[v]:.1f}", " / ".join(f"{s:.1f}" for s in seconds[v]),
             f"{median[v] / trials:.1f}", f"{(median[v] - loop) / trials:+.1f}") for v in VARIANTS]
    rows.append(("ray.init (local, once per command)", "", f"{ray_start:.1f}", "", "", ""))
    result = {
        "environment": environment(),
        "command": f"clipsearch bench tune --trials {trials} --epochs {epochs} --rounds {rounds}",
        "setup": {"trials": trials, "epochs": epochs, "rounds": rounds, "data.fraction": 0.1, "preset": "quick",
                  "concurrency": 1, "mlflow": "sqlite child run per trial", "checkpoint": "every epoch"},
        "seconds": seconds, "median_seconds": median, "ray_init_seconds": ray_start,
        "overhead_per_trial_s": {v: (median[v] - loop) / trials for v in VARIANTS if v != "in_process"},
    }
    return write_result(out_dir, "tune", result, rows,
                        ("variant", "trials", "median wall s", "wall s per round", "s per trial",
                         "overhead per trial s"))
