"""The training entry point end to end on CPU: it learns, it is deterministic, it resumes exactly."""

import math

import pytest
import torch

from clipsearch.config import load_config
from clipsearch.train import TIMING_KEYS, NonFiniteLossError, train

TINY = ["data.fraction=0.1", "train.batch_size=32", "train.epochs=3", "train.threads=1", "eval.batch_size=1024"]


def without_timings(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def tiny(*more):
    return load_config(quick=True, overrides=TINY + list(more))


class Crash(Exception):
    pass


def test_train_reports_every_epoch_and_writes_checkpoints(tmp_path):
    seen = []
    result = train(tiny(), report=lambda m, ckpt: seen.append((m, ckpt)), run_dir=tmp_path)
    assert [m["epoch"] for m, _ in seen] == [1, 2, 3]
    for key in ("train_loss", "tr1", "ir1", "acc1", "acc5", "objective", "lr", "best_objective", "best_epoch"):
        assert key in seen[-1][0] and math.isfinite(seen[-1][0][key])
    assert (tmp_path / "checkpoint" / "state.pt").is_file() and (tmp_path / "best" / "model.pt").is_file()
    assert result["best_epoch"] in (1, 2, 3)
    assert result["best_objective"] == max(m["objective"] for m, _ in seen)


def test_same_config_and_seed_gives_same_metrics():
    a = train(tiny("train.epochs=2"))
    b = train(tiny("train.epochs=2"))
    assert without_timings(a) == without_timings(b)


def test_different_seed_gives_different_metrics():
    a = train(tiny("train.epochs=1"))
    b = train(tiny("train.epochs=1", "seed=1"))
    assert a["train_loss"] != b["train_loss"]


@pytest.mark.parametrize("loss", ["clip", "isogclr"])
def test_run_stopped_after_epoch_k_and_resumed_ends_like_an_unbroken_run(tmp_path, loss):
    """isogclr: the per-sample state (u, b, temperatures, their momentum) must come back exactly,
    or the resumed run's temperature statistics and metrics would differ."""
    unbroken = train(tiny(f"loss.name={loss}"), run_dir=tmp_path / "unbroken")

    def crash_after_two(metrics, checkpoint):
        if metrics["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        train(tiny(f"loss.name={loss}"), report=crash_after_two, run_dir=tmp_path / "broken")
    resumed = train(tiny(f"loss.name={loss}"), run_dir=tmp_path / "broken",
                    resume_from=tmp_path / "broken" / "checkpoint")
    if loss == "isogclr":
        assert resumed["loss_tau_max"] > resumed["loss_tau_min"]  # the state is not trivial
    drop = set(TIMING_KEYS)
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in unbroken.items() if k not in drop}


@pytest.mark.census("trial faults")  # clipsearch bench reliability counts it
def test_non_finite_loss_stops_training_at_once(monkeypatch):
    from clipsearch.losses.clip import ClipLoss

    calls = []
    original = ClipLoss.forward

    def nan_on_third_step(self, *args, **kwargs):
        calls.append(1)
        out = original(self, *args, **kwargs)
        if len(calls) == 3:
            out["loss"] = out["loss"] * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(ClipLoss, "forward", nan_on_third_step)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        train(tiny())
    assert len(calls) == 3


def test_isogclr_temperatures_spread_in_training_while_sogclr_stays_fixed():
    iso = train(tiny("loss.name=isogclr", "train.epochs=1"))
    sog = train(tiny("loss.name=sogclr", "train.epochs=1"))
    tau_init = tiny("loss.name=isogclr").loss.params["tau_init"]
    assert iso["loss_tau_min"] < tau_init and iso["loss_tau_max"] - iso["loss_tau_min"] > 0.01
    assert sog["loss_tau_min"] == sog["loss_tau_max"] == tiny("loss.name=sogclr").loss.params["temperature"]


@pytest.mark.parametrize("scaled", [False, True])
def test_fp16_keeps_a_gradient_below_fp16s_smallest_normal_only_with_the_grad_scaler(scaled):
    """A gradient of 1e-9 (below fp16's smallest subnormal, 6e-8) underflows to zero in an fp16
    backward; the GradScaler that train.precision=fp16 turns on scales it into range first."""
    from clipsearch.train import _autocast, backward_and_step

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=scaled)
    with _autocast("fp16", torch.device("cpu")):
        out = layer(torch.randn(8, 4))
    assert out.dtype == torch.float16
    backward_and_step(out.float().sum() * 1e-9, optimizer, scaler, grad_clip=0.0)
    survived = bool(layer.weight.grad.abs().max() > 0)
    assert survived == scaled


def test_an_fp16_run_resumes_with_its_loss_scale(tmp_path):
    run = train(tiny("train.epochs=1", "train.precision=fp16"), run_dir=tmp_path)
    saved = torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)
    assert saved["scaler"]["scale"] > 0 and math.isfinite(run["train_loss"])
