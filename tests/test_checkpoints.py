"""adopt_optimizer_settings: a checkpoint resumed under other optimizer settings (Population Based
Training's exploit) goes on with those settings and with everything it had learned. Tiny modules
on CPU, the real optimizer and schedule factories."""

import torch
from torch import nn

from clipsearch.checkpoints import RunState, adopt_optimizer_settings, load_checkpoint, read_checkpoint, save_checkpoint
from clipsearch.config import OptimizerConfig
from clipsearch.optim import build_optimizer, build_scheduler

STEPS, EPOCHS = 5, 4


def run(lr: float, weight_decay: float):
    torch.manual_seed(0)
    model, loss = nn.Linear(4, 2), nn.Module()
    optimizer = build_optimizer([model], "adamw", lr, weight_decay)
    schedule = build_scheduler(optimizer, "cosine", {"warmup_epochs": 1}, EPOCHS, STEPS)
    return model, loss, optimizer, schedule


def train_steps(model, optimizer, schedule, first: int, count: int) -> None:
    for step in range(first, first + count):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        schedule.after_step(step + 1)


def saved_after(tmp_path, steps: int, lr=1e-3, weight_decay=0.1):
    model, loss, optimizer, schedule = run(lr, weight_decay)
    train_steps(model, optimizer, schedule, 0, steps)
    save_checkpoint(tmp_path, model, loss, optimizer, schedule, torch.Generator(), RunState(epoch=1, step=steps))
    return optimizer


def test_the_resumed_run_follows_the_new_lr_and_decay_from_where_it_was(tmp_path):
    before = saved_after(tmp_path, steps=7)  # past the warmup: on the cosine
    assert adopt_optimizer_settings(tmp_path, OptimizerConfig(name="adamw", lr=4e-3, weight_decay=0.05))
    model, loss, optimizer, schedule = run(1e-3, 0.1)  # the donor's settings, as the trainer builds them
    load_checkpoint(tmp_path, model, loss, optimizer, schedule, torch.Generator())
    schedule.after_step(8)
    *_, reference_opt, reference = run(4e-3, 0.05)  # a run that had the new settings from the start
    reference.after_step(8)
    assert optimizer.param_groups[0]["lr"] == reference_opt.param_groups[0]["lr"]
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 0.05]  # biases still undecayed
    moments = [s["exp_avg"] for s in optimizer.state.values()]
    assert all(torch.equal(a, b["exp_avg"]) for a, b in zip(moments, before.state.values()))  # learned state kept


def test_the_same_settings_leave_the_checkpoint_as_it_was(tmp_path):
    saved_after(tmp_path, steps=3)
    first = read_checkpoint(tmp_path)["optimizer"]["param_groups"]
    assert not adopt_optimizer_settings(tmp_path, OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.1))
    assert read_checkpoint(tmp_path)["optimizer"]["param_groups"] == first
