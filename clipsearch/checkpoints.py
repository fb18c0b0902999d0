"""A training run's checkpoint: state.pt (the modules, the optimizer, the schedule, the RNGs and
where the run is), with the one it replaced kept as state.prev.pt, both written atomically; read
back as data only (weights_only), falling back to state.prev.pt when state.pt is cut short.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import OptimizerConfig
from .errors import InputError
from .models import load_trainable_state, trainable_state
from .results import CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, atomic_write

log = logging.getLogger(__name__)


@dataclass
class RunState:
    """What a checkpoint carries besides the modules: where the run is and how it has done."""

    epoch: int = 0                       # epochs completed
    step: int = 0                        # optimizer updates done
    best_objective: float = -math.inf
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)


def atomic_save(obj, path: Path) -> None:
    """torch.save through the results room's one atomic write: a crash never leaves half a
    file, and a failed write (a full disk) leaves no temporary file behind."""
    atomic_write(path, lambda file: torch.save(obj, file))


def save_checkpoint(directory: Path, model, loss_fn, optimizer, schedule, generator, state: RunState,
                    scaler: torch.amp.GradScaler | None = None) -> None:
    """state.pt, with the one it replaces kept as state.prev.pt (see load_checkpoint)."""
    current = directory / CHECKPOINT_FILE
    atomic_save({
        "model": trainable_state(model), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(), "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(), "state": vars(state).copy(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
    }, directory / ".state.next.pt")
    if current.is_file():
        os.replace(current, directory / PREVIOUS_CHECKPOINT_FILE)
    os.replace(directory / ".state.next.pt", current)


def load_checkpoint(directory: Path, model, loss_fn, optimizer, schedule, generator,
                    scaler: torch.amp.GradScaler | None = None) -> RunState:
    saved = read_checkpoint(directory)
    if scaler is not None and scaler.is_enabled() and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])  # fp16's loss scale goes on where it was
    load_trainable_state(model, saved["model"])
    loss_fn.load_state_dict(saved["loss"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    return RunState(**saved["state"])


def adopt_optimizer_settings(directory: Path, optimizer: OptimizerConfig) -> bool:
    """Put `optimizer`'s hyperparameters (lr, weight decay and the optimizer's own) into the
    optimizer and schedule state of directory's state.pt, keeping everything learned (moments,
    the step count, the schedule's position); True when they differed and the file was rewritten.

    For Population Based Training's exploit: a trial goes on from another trial's checkpoint
    with its own mutated hyperparameters, and load_checkpoint would otherwise bring back the
    other trial's (an optimizer's state_dict carries its param groups' settings, a timm
    schedule its base learning rates). The no-decay group (biases, norms) keeps no decay."""
    from .optim import optimizer_kwargs

    path = directory / CHECKPOINT_FILE
    saved = read_checkpoint(directory)
    wanted = optimizer_kwargs(optimizer.name, optimizer.lr, optimizer.weight_decay, optimizer.params)
    per_update = saved["schedule"].get("per_update", {})
    changed = False
    for i, group in enumerate(saved["optimizer"]["param_groups"]):
        for key, value in wanted.items():
            skip = key == "lr" or (key == "weight_decay" and group[key] == 0)  # the no-decay group stays so
            if key in group and not skip and group[key] != value:
                group[key], changed = value, True
        base = (per_update.get("base_values") or [])[i:i + 1] or [group.get("initial_lr", group["lr"])]
        if base[0] != optimizer.lr:
            # the lr the schedule has reached, at the new base: the next update goes on from there
            group["lr"] *= optimizer.lr / base[0]
            if "initial_lr" in group:
                group["initial_lr"] = optimizer.lr
            changed = True
    changed |= _rebase_schedule(per_update, optimizer.lr)
    if changed:
        atomic_save(saved, path)
    return changed


def _rebase_schedule(per_update: dict, lr: float) -> bool:
    """A timm schedule's state with `lr` as every group's base learning rate (its warmup ramp
    recomputed to reach it)."""
    base = per_update.get("base_values")
    if not base or all(v == lr for v in base):
        return False
    per_update["base_values"] = [lr for _ in base]
    if per_update.get("warmup_t"):
        per_update["warmup_steps"] = [(lr - per_update["warmup_lr_init"]) / per_update["warmup_t"] for _ in base]
    return True


def read_checkpoint(directory: Path) -> dict:
    """The latest readable checkpoint in `directory`: state.pt, or state.prev.pt (one epoch
    earlier) when state.pt is truncated, empty or missing (a disk that filled, a copy cut short).

    A checkpoint is data: loading one never runs code (weights_only). One that holds pickled
    objects is refused outright, not skipped: someone put it there.
    """
    problems = []
    for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} missing")
            continue
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise InputError(f"checkpoint refused: it holds pickled objects, not only tensors ({exc.__class__.__name__})",
                             where=str(path), fix="resume only from checkpoints clipsearch wrote") from None
        except (RuntimeError, EOFError, OSError) as exc:  # torch's zip reader on a cut file, an empty file
            problems.append(f"{name} unreadable ({' '.join(str(exc).split())[:80]})")
            continue
        if problems:
            log.warning("%s: %s; resuming from %s", directory, "; ".join(problems), name)
        return saved
    raise InputError(f"no readable checkpoint: {'; '.join(problems)}", where=str(directory),
                     fix="start the run afresh (without --resume)")
