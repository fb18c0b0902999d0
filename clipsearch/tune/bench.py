"""The platform's overhead per trial: the same tiny training runs through Ray Tune and through
train() in a loop, measured in one run.

Each variant runs the same `trials` configs (the quick preset, 10% of the pairs, `epochs`
epochs, four learning rates) one at a time, so that the only difference is what Tune adds:
starting (or reusing) the trial's actor and importing torch there, reporting each epoch,
copying each epoch's checkpoint into the experiment folder, Tune's own bookkeeping and the
MLflow child run (params, per-epoch metrics) on the driver. Starting the Ray cluster is
measured apart: a phase pays it once. Variants: in-process loop, Tune with a fresh actor per
trial, Tune with reuse_actors=True (what the phases use).
"""

from __future__ import annotations

import contextlib
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


def run_tune_benchmark(trials: int = 4, epochs: int = 2, out_dir: Path = Path("results/benchmarks")) -> Path:
    import ray

    raw, defaults, _ = read_base("quick")
    base = Base(raw, defaults, "quick")
    shared, lrs = _configs(trials, epochs)
    with tempfile.TemporaryDirectory(prefix="clipsearch-bench-") as tmp:
        workdir = Path(tmp)
        loop = _in_process(base, shared, lrs, workdir)
        started = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        ray_start = time.perf_counter() - started
        try:
            fresh = _through_tune(base, shared, lrs, workdir, reuse=False, tag="fresh")
            reused = _through_tune(base, shared, lrs, workdir, reuse=True, tag="reused")
        finally:
            ray.shutdown()
    return _write(out_dir, trials, epochs, loop, fresh, reused, ray_start)


def _write(out_dir: Path, trials: int, epochs: int, loop: float, fresh: float, reused: float, ray_start: float) -> Path:
    per = {"in-process train() loop": loop, "Ray Tune, a fresh actor per trial": fresh,
           "Ray Tune, reuse_actors=True": reused}
    rows = [(name, trials, f"{s:.1f}", f"{s / trials:.1f}", f"{(s - loop) / trials:+.1f}") for name, s in per.items()]
    rows.append(("ray.init (local, once per command)", "", f"{ray_start:.1f}", "", ""))
    result = {
        "environment": environment(),
        "command": f"clipsearch bench tune --trials {trials} --epochs {epochs}",
        "setup": {"trials": trials, "epochs": epochs, "data.fraction": 0.1, "preset": "quick",
                  "concurrency": 1, "mlflow": "sqlite child run per trial", "checkpoint": "every epoch"},
        "seconds": {"in_process": loop, "tune_fresh_actors": fresh, "tune_reuse_actors": reused, "ray_init": ray_start},
        "overhead_per_trial_s": {"fresh_actors": (fresh - loop) / trials, "reuse_actors": (reused - loop) / trials},
    }
    return write_result(out_dir, "tune", result, rows,
                        ("variant", "trials", "wall s", "s per trial", "overhead per trial s"))
