"""What a task is to the training loop (clipsearch.train): one small protocol.

A task checks what a config alone can get wrong about it (before any data loads) and builds a
`Setup`: the model, the batches, the loss, the per-batch step and the evaluator. The epoch loop,
the optimizer and schedule, checkpoints, best/model.pt, reporting and the non-finite-loss stop
are the loop's, shared by every task. A task never imports the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Setup:
    """What differs between the tasks train() runs; everything else in the loop is shared.

    step(model, loss_fn, batch, device, autocast) -> the loss's dict for one batch;
    evaluator(model, autocast) -> metrics with "objective" (higher is better).
    """

    model: torch.nn.Module
    batches: object                  # len() and epoch(generator) -> batches
    loss_fn: torch.nn.Module
    evaluator: Callable
    step: Callable
    train_images: int
    skipped_images: int


@dataclass(frozen=True)
class Task:
    """One task: its name (a loss's `LossInfo.task`), its config check, its set-up, and the
    metrics its evaluators can report (what a search space may maximise)."""

    name: str
    check: Callable[[object], None]                       # check(cfg): raises InputError
    setup: Callable[[object, torch.device], Setup]        # setup(cfg, device)
    metrics: Callable[[], tuple[str, ...]]
