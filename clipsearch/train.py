"""`train(cfg, report=...)`: one training run (image-text or image-only), read top to bottom.

The loop knows nothing of Ray or MLflow: after every epoch it writes a checkpoint and calls
`report(metrics, checkpoint_dir)`; the Ray trainable forwards that to `tune.report`, the CLI
prints it. A run given `resume_from` (a checkpoint directory) continues exactly where that
checkpoint left off: model, optimizer, scheduler, the loss's per-sample state, the data RNG and
the epoch, so its metrics equal those of an unbroken run.

What differs between the tasks (the model, the batches, the loss, the step, the evaluator) is a
task's `Setup` (clipsearch.tasks: the loss's registry entry names the task); `build_run` puts a
Setup together with what every update needs, and `Run.step` is the one training step, which the
loop calls for every batch and the benchmarks time.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from .checkpoints import RunState, atomic_save, load_checkpoint, save_checkpoint
from .config import Config, save_config
from .models import resolve_device, trainable_state
from .optim import build_optimizer, build_scheduler
from .results import RunFolder
from .tasks import Setup, task_for

Report = Callable[[dict, Path | None], None]
#: what train() reports of its own wall time each epoch: the only keys two equal runs differ in
TIMING_KEYS = ("epoch_seconds", "train_seconds", "eval_seconds")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf: training stops at once instead of training on garbage."""


@dataclass
class Run:
    """One run's parts, built once by `build_run`: the task's Setup and what every update needs."""

    cfg: Config
    device: torch.device
    setup: Setup
    optimizer: torch.optim.Optimizer
    schedule: object                 # clipsearch.optim's schedule: after_step / after_epoch / lr()
    scaler: torch.amp.GradScaler
    autocast: object                 # a context manager (torch.autocast or a no-op)
    generator: torch.Generator       # the data order's RNG
    steps_per_epoch: int
    state: RunState

    @property
    def model(self) -> torch.nn.Module:
        return self.setup.model

    @property
    def loss_fn(self) -> torch.nn.Module:
        return self.setup.loss_fn

    def step(self, batch) -> dict:
        """One update: the task's forward and loss under autocast, the non-finite stop, the
        scaled backward, gradient clipping, the optimizer's step and the schedule's."""
        out = self.setup.step(self.model, self.loss_fn, batch, self.device, self.autocast)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()} at epoch {self.state.epoch + 1}, "
                                     f"step {self.state.step + 1}")
        backward_and_step(loss, self.optimizer, self.scaler, self.cfg.train.grad_clip)
        self.state.step += 1
        self.schedule.after_step(self.state.step)
        return out


def build_run(cfg: Config, resume_from: str | Path | None = None) -> Run:
    """The task's Setup, the optimizer and schedule over its model and loss, the data RNG, the
    fp16 grad scaler; everything as `resume_from`'s checkpoint left it, when given."""
    torch.manual_seed(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    return run_from_setup(cfg, task_for(cfg).setup(cfg, device), device, resume_from)


def run_from_setup(cfg: Config, setup: Setup, device: torch.device, resume_from: str | Path | None = None) -> Run:
    """A Run around a Setup built elsewhere (build_run builds the task's; `clipsearch bench gpu`
    builds seed 001's model from its architectures alone): the model's image layout, the
    optimizer, schedule, data RNG and grad scaler as cfg says, so that Run.step is the loop's own
    step."""
    if cfg.train.channels_last:  # every task's encoder (models.ChannelsLast)
        setup.model.use_channels_last()
    optimizer = build_optimizer([setup.model, setup.loss_fn], cfg.optimizer.name, cfg.optimizer.lr,
                                cfg.optimizer.weight_decay, cfg.optimizer.params)
    steps_per_epoch = min(len(setup.batches), cfg.train.max_steps_per_epoch or len(setup.batches))
    schedule = build_scheduler(optimizer, cfg.scheduler.name, cfg.scheduler.params, cfg.train.epochs, steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed)
    # fp16's smallest normal is 6e-5: unscaled, small gradients underflow to zero in backward
    scaler = torch.amp.GradScaler(device.type, enabled=_precision(cfg.train.precision, device) == "fp16")
    state = RunState()
    if resume_from is not None:
        state = load_checkpoint(Path(resume_from), setup.model, setup.loss_fn, optimizer, schedule, generator, scaler)
    return Run(cfg, device, setup, optimizer, schedule, scaler, _autocast(cfg.train.precision, device), generator,
               steps_per_epoch, state)


def train(cfg: Config, report: Report | None = None, run_dir: str | Path | None = None,
          resume_from: str | Path | None = None, progress: bool = False) -> dict:
    """Train as `cfg` says; returns the last epoch's metrics plus best_*.

    run_dir: where checkpoints go (`checkpoint/state.pt` each epoch, `best/model.pt` at the best
    epoch); None keeps nothing on disk. resume_from: a checkpoint directory to continue from.
    """
    run = build_run(cfg, resume_from)
    state = run.state
    folder = RunFolder(Path(run_dir)) if run_dir is not None else None
    if folder is not None:
        folder.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, folder.config)
    last: dict = {}
    for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
        started = time.perf_counter()
        train_metrics = train_one_epoch(run, epoch, progress)
        state.epoch = epoch
        trained = time.perf_counter()
        # train_seconds / eval_seconds: the epoch's productive time; the rest of a trial's wall
        # time (set-up, checkpoints, reporting) is overhead (`clipsearch bench tune`'s goodput)
        last = {"epoch": epoch, **train_metrics,
                **{f"loss_{k}": v for k, v in run.loss_fn.epoch_diagnostics().items()},
                "train_seconds": trained - started, "eval_seconds": 0.0}
        if epoch % cfg.eval.every == 0 or epoch == cfg.train.epochs:
            evaluation = run.setup.evaluator(run.model, run.autocast)
            last.update(evaluation, eval_seconds=time.perf_counter() - trained)
            run.schedule.after_epoch(epoch, evaluation["objective"])
            if evaluation["objective"] > state.best_objective:
                state.best_objective, state.best_epoch = evaluation["objective"], epoch
                state.best_metrics = evaluation
                if folder is not None:
                    atomic_save({"model": trainable_state(run.model)}, folder.best_model)
        last.update(best_objective=state.best_objective, best_epoch=state.best_epoch,
                    epoch_seconds=time.perf_counter() - started, train_images=run.setup.train_images,
                    skipped_images=run.setup.skipped_images)
        checkpoint = None
        if folder is not None:
            checkpoint = folder.state_dir
            save_checkpoint(checkpoint, run.model, run.loss_fn, run.optimizer, run.schedule, run.generator, state,
                            run.scaler)
        if report is not None:
            report(dict(last), checkpoint)
    return {**last, **{f"best_{k}": v for k, v in state.best_metrics.items()}}


def train_one_epoch(run: Run, epoch: int, progress: bool = False) -> dict:
    """run.step over one epoch's batches (at most run.steps_per_epoch); the mean of each of the
    loss's outputs, and the learning rate at the end."""
    run.model.train()
    steps = run.steps_per_epoch
    totals: dict[str, float] = {}
    # disable=None: no bar when stderr is not a terminal (logs, CI, Ray workers)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", disable=None if progress else True, leave=False, dynamic_ncols=True)
    for i, batch in enumerate(run.setup.batches.epoch(run.generator)):
        if i >= steps:
            break  # max_steps_per_epoch; the generator has drawn this epoch's order either way
        out = run.step(batch)
        for key, value in out.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach())  # one sync per key: fine at this scale
        bar.update(1)
        bar.set_postfix(loss=f"{totals['loss'] / (i + 1):.4f}")
    bar.close()
    n = max(min(steps, len(run.setup.batches)), 1)
    return {("train_loss" if k == "loss" else f"train_{k}"): v / n for k, v in totals.items()} | {"lr": run.schedule.lr()}


def backward_and_step(loss: torch.Tensor, optimizer, scaler: torch.amp.GradScaler, grad_clip: float) -> None:
    """One update from `loss`: backward scaled by `scaler` (fp16; a no-op when disabled),
    gradients unscaled before clipping, the step skipped when they overflowed."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()



def _precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _autocast(precision: str, device: torch.device):
    precision = _precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
