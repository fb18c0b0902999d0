"""The optimizer and schedule registries: every name trains, resumes, and every knob matters."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipsearch.errors import InputError
from clipsearch.optim import (
    COMMON_OPTIMIZER_PARAMS, ApexNovoGrad, build_optimizer, build_scheduler, list_optimizers,
    list_schedulers, optimizer_info, optimizer_kwargs, param_groups, resolve_optimizer_params,
    resolve_scheduler_params, scheduler_info,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "optimizers.md"
CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))
#: every name whose class has a fused or multi-tensor kernel (build_optimizer turns it on)
FUSED = [name for name in list_optimizers() if optimizer_info(name).kernel_flag]
TWINNED = [name for name in list_optimizers() if optimizer_info(name).same_as]

# a value other than any default, for each hyperparameter a registry declares
OTHER_VALUE = {"lr": 0.05, "weight_decay": 0.1, "beta1": 0.5, "beta2": 0.9, "eps": 1e-2,
               "momentum": 0.5, "alpha": 0.5}


@pytest.fixture(autouse=True)
def one_thread():
    # the tensors are tiny: threads only add contention on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# small problems
# ----------------------------------------------------------------------------------------------

class Quadratic(nn.Module):
    """sum_i c_i (w_i - t_i)^2 with two parameters and unequal curvatures."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[3.0, -2.0]]))
        self.register_buffer("curvature", torch.tensor([1.0, 4.0]))
        self.register_buffer("target", torch.tensor([0.5, 1.0]))

    def forward(self) -> torch.Tensor:
        return (self.curvature * (self.w - self.target) ** 2).sum()


class TinyClip(nn.Module):
    """Two linear towers on paired random 8-d inputs; symmetric InfoNCE at temperature 0.1."""

    def __init__(self, seed: int = 0, batch: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("images", torch.randn(batch, 8, generator=g))
        texts = self.images @ torch.randn(8, 8, generator=g) + 0.1 * torch.randn(batch, 8, generator=g)
        self.register_buffer("texts", texts)
        torch.manual_seed(seed)
        self.image_tower, self.text_tower = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self) -> torch.Tensor:
        a = F.normalize(self.image_tower(self.images), dim=-1)
        b = F.normalize(self.text_tower(self.texts), dim=-1)
        logits = a @ b.T / 0.1
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> float:
    for _ in range(steps):
        optimizer.zero_grad()
        model().backward()
        optimizer.step()
    return model().item()


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().cpu() for p in model.parameters()])


def trajectory(name: str, steps: int = 10, lr: float = 0.01, weight_decay: float = 0.01,
               **params) -> torch.Tensor:
    model = TinyClip()
    train(model, build_optimizer(model, name, lr, weight_decay, params), steps)
    return flat(model)


# ----------------------------------------------------------------------------------------------
# optimizers: they train
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_reduces_a_quadratic(name, device):
    model = Quadratic().to(device)
    start = model().item()
    end = train(model, build_optimizer(model, name, lr=0.1, weight_decay=0.0), steps=100)
    assert end < 0.05 * start


@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_reduces_a_tiny_clip_loss(name):
    model = TinyClip()
    start = model().item()
    end = train(model, build_optimizer(model, name, lr=0.02, weight_decay=0.0), steps=50)
    assert end < 0.5 * start


@pytest.mark.parametrize("name", list_optimizers())
def test_optimizer_state_dict_round_trip_continues_identically(name):
    model = TinyClip()
    optimizer = build_optimizer(model, name, lr=0.01, weight_decay=0.01)
    train(model, optimizer, steps=3)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    resumed_model = copy.deepcopy(model)
    resumed = build_optimizer(resumed_model, name, lr=0.01, weight_decay=0.01)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    train(model, optimizer, steps=3)
    train(resumed_model, resumed, steps=3)
    assert torch.equal(flat(model), flat(resumed_model))


# ----------------------------------------------------------------------------------------------
# optimizers: what each name runs
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("name", FUSED)
def test_fused_kernel_ends_near_its_per_tensor_twin(name, device):
    info = optimizer_info(name)
    fused_model, twin_model = TinyClip().to(device), TinyClip().to(device)
    fused = build_optimizer(fused_model, name, lr=0.01, weight_decay=0.01)
    twin_kwargs = {**optimizer_kwargs(name, 0.01, 0.01), info.kernel_flag: False}
    twin = info.runs(param_groups(twin_model, 0.01), **twin_kwargs)
    train(fused_model, fused, steps=20)
    train(twin_model, twin, steps=20)
    assert torch.allclose(flat(fused_model), flat(twin_model), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", FUSED)
def test_fused_names_select_their_fused_kernel(name):
    flag = optimizer_info(name).kernel_flag
    optimizer = build_optimizer(TinyClip(), name, lr=0.01, weight_decay=0.01)
    assert [g[flag] for g in optimizer.param_groups] == [True, True]


@pytest.mark.parametrize("name", TWINNED)
def test_names_marked_same_as_run_the_same_trajectory(name):
    twin = optimizer_info(name).same_as
    assert torch.allclose(trajectory(name, steps=20), trajectory(twin, steps=20), rtol=1e-4, atol=1e-5)


def apex_novograd_reference(p, grads, lr, beta1, beta2, eps, wd):
    """apex's multi_tensor_novograd kernel (moment mode 1) for one tensor, element by element."""
    p, m, v = list(p), [0.0] * len(p), None
    for t, g in enumerate(grads, start=1):
        norm = math.sqrt(sum(x * x for x in g))
        v = norm if v is None else math.sqrt(beta2 * v * v + (1 - beta2) * norm * norm)
        denom = v / math.sqrt(1 - beta2 ** t) + eps
        for i in range(len(p)):
            m[i] = beta1 * m[i] + (1 - beta1) * g[i]
            p[i] -= lr * (m[i] / (1 - beta1 ** t) / denom + wd * p[i])
    return p


@pytest.mark.parametrize("foreach", [True, False])
def test_fusednovograd_follows_apex_kernel_equations(foreach):
    grads = [[1.0, -2.0, 0.5], [0.3, 0.1, -4.0], [-1.0, 1.0, 2.0]]
    param = nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    optimizer = ApexNovoGrad([param], lr=0.1, betas=(0.9, 0.7), eps=1e-3, weight_decay=0.05, foreach=foreach)
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    expected = apex_novograd_reference([0.5, -1.0, 2.0], grads, 0.1, 0.9, 0.7, 1e-3, 0.05)
    assert torch.allclose(param.detach(), torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_fusednovograd_keeps_half_precision_norms_in_float32_across_resume():
    param = nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    optimizer = ApexNovoGrad([param], lr=0.1)
    param.grad = torch.full((3,), 300.0, dtype=torch.bfloat16)
    optimizer.step()
    resumed = ApexNovoGrad([param], lr=0.1)
    resumed.load_state_dict(optimizer.state_dict())
    saved = optimizer.state[param]["grad_norm_sq_avg"]
    assert resumed.state[param]["grad_norm_sq_avg"].dtype == torch.float32
    assert torch.equal(resumed.state[param]["grad_norm_sq_avg"], saved)


def test_fusedadam_is_adam_with_l2_decay_not_adamw():
    # timm's name for apex FusedAdam(adam_w_mode=False): weight decay enters the gradient
    assert torch.allclose(trajectory("fusedadam", weight_decay=0.5), trajectory("adam", weight_decay=0.5),
                          rtol=1e-4, atol=1e-5)
    assert not torch.allclose(trajectory("fusedadam", weight_decay=0.5), trajectory("adamw", weight_decay=0.5),
                              rtol=1e-4, atol=1e-5)


class WithNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


class LearnableTemperature(nn.Module):
    def __init__(self, shared: nn.Parameter):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.tensor(0.0))
        self.shared = shared  # a tensor the model owns too


def test_no_weight_decay_on_biases_norms_and_temperature_across_modules():
    model = WithNorm()
    loss = LearnableTemperature(shared=model.linear.weight)
    optimizer = build_optimizer([model, loss], "adamw", lr=1e-3, weight_decay=0.1)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay_of == {id(model.linear.weight): 0.1, id(model.linear.bias): 0.0,
                        id(model.norm.weight): 0.0, id(model.norm.bias): 0.0,
                        id(loss.log_temperature): 0.0}


def test_names_a_module_lists_in_no_weight_decay_get_none():
    class WithPositions(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(4, 3))
            self.proj = nn.Parameter(torch.zeros(3, 3))

        def no_weight_decay(self):
            return {"pos_embed"}

    module = WithPositions()
    groups = param_groups(module, weight_decay=0.1)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of == {id(module.pos_embed): 0.0, id(module.proj): 0.1}


@pytest.mark.parametrize("name", ["momentum", "rmsprop"])
def test_momentum_reaches_the_optimizer(name):
    optimizer = build_optimizer(Quadratic(), name, lr=0.1, weight_decay=0.0, params={"momentum": 0.3})
    assert [g["momentum"] for g in optimizer.param_groups] == [0.3]


OPTIMIZER_KNOBS = [(name, key) for name in list_optimizers()
                   for key in [*COMMON_OPTIMIZER_PARAMS, *optimizer_info(name).params]]


@pytest.mark.parametrize("name,key", OPTIMIZER_KNOBS)
def test_every_optimizer_hyperparameter_changes_the_trajectory(name, key):
    settings = {"lr": 0.01, "weight_decay": 0.01, **resolve_optimizer_params(name, {})}
    changed = {**settings, key: OTHER_VALUE[key]}
    assert changed != settings
    assert not torch.allclose(trajectory(name, **settings), trajectory(name, **changed), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------------

BASE_LR = 0.1


def fresh_optimizer() -> torch.optim.Optimizer:
    return build_optimizer(Quadratic(), "momentum", lr=BASE_LR, weight_decay=0.0)


def lr_curve(schedule, epochs: int, steps_per_epoch: int, metric=lambda epoch: 0.5,
             first_epoch: int = 0) -> list[float]:
    """The lr after every update and every epoch end (a flat objective unless `metric` says)."""
    curve = []
    for epoch in range(first_epoch, epochs):
        for step in range(steps_per_epoch):
            schedule.after_step(epoch * steps_per_epoch + step + 1)
            curve.append(schedule.lr())
        schedule.after_epoch(epoch, metric(epoch))
        curve.append(schedule.lr())
    return curve


def lr_after_each_update(schedule, updates: int) -> dict[int, float]:
    lrs = {}
    for update in range(1, updates + 1):
        schedule.after_step(update)
        lrs[update] = schedule.lr()
    return lrs


@pytest.mark.parametrize("name", list_schedulers())
def test_warmup_counts_epochs_from_warmup_lr_to_base_lr(name):
    schedule = build_scheduler(fresh_optimizer(), name, {"warmup_epochs": 2, "warmup_lr": 1e-4},
                               epochs=10, steps_per_epoch=10)
    assert schedule.lr() == pytest.approx(1e-4)
    lrs = lr_after_each_update(schedule, 20)
    assert all(lrs[t] < lrs[t + 1] for t in range(1, 20))
    assert lrs[19] < BASE_LR and lrs[20] == pytest.approx(BASE_LR)


@pytest.mark.parametrize("cooldown", [0, 2])
@pytest.mark.parametrize("name", ["cosine", "tanh"])
def test_annealing_reaches_min_lr_and_holds_it_through_cooldown(name, cooldown):
    params = {"min_lr": 1e-3, "cooldown_epochs": cooldown}
    schedule = build_scheduler(fresh_optimizer(), name, params, epochs=10, steps_per_epoch=5)
    lrs = lr_after_each_update(schedule, 50)
    reached = 50 - 5 * cooldown
    assert [lrs[t] for t in range(reached, 51)] == pytest.approx([1e-3] * (5 * cooldown + 1))
    assert lrs[reached - 1] > 1e-3


def test_step_multiplies_lr_by_decay_rate_every_decay_epochs():
    schedule = build_scheduler(fresh_optimizer(), "step", {"decay_rate": 0.5, "decay_epochs": 2},
                               epochs=6, steps_per_epoch=4)
    per_epoch = lr_curve(schedule, epochs=6, steps_per_epoch=4)[4::5]
    assert per_epoch == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025, 0.0125])


def test_plateau_reduces_on_a_flat_objective_after_patience_epochs():
    schedule = build_scheduler(fresh_optimizer(), "plateau", {"patience": 2, "decay_rate": 0.5},
                               epochs=6, steps_per_epoch=3)
    per_epoch_end = lr_curve(schedule, epochs=6, steps_per_epoch=3)[3::4]
    # the first epoch sets the best, then 3 epochs without improvement exceed patience 2
    assert per_epoch_end == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05])


def test_plateau_keeps_lr_while_the_objective_improves():
    schedule = build_scheduler(fresh_optimizer(), "plateau", {"patience": 0}, epochs=5, steps_per_epoch=2)
    curve = lr_curve(schedule, epochs=5, steps_per_epoch=2, metric=lambda epoch: float(epoch))
    assert curve == pytest.approx([BASE_LR] * len(curve))


def rising_then_flat(epoch: int) -> float:
    return min(epoch, 2) / 10


@pytest.mark.parametrize("name", list_schedulers())
def test_schedule_state_dict_round_trip_continues_identically(name):
    params = {"warmup_epochs": 1, "warmup_lr": 1e-3}
    params.update({"patience": 1} if name == "plateau" else {})
    optimizer = fresh_optimizer()
    schedule = build_scheduler(optimizer, name, params, epochs=8, steps_per_epoch=3)
    lr_curve(schedule, epochs=4, steps_per_epoch=3, metric=rising_then_flat)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, buffer)

    resumed_optimizer = fresh_optimizer()
    resumed = build_scheduler(resumed_optimizer, name, params, epochs=8, steps_per_epoch=3)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["schedule"])
    rest = dict(epochs=8, steps_per_epoch=3, metric=rising_then_flat, first_epoch=4)
    assert lr_curve(resumed, **rest) == lr_curve(schedule, **rest)


# a base setting where every knob acts, and another value for each
SCHEDULE_BASE = {"warmup_epochs": 1, "warmup_lr": 1e-3, "min_lr": 1e-3, "cooldown_epochs": 1,
                 "decay_rate": 0.5, "decay_epochs": 2, "patience": 1}
SCHEDULE_OTHER = {"warmup_epochs": 2, "warmup_lr": 1e-2, "min_lr": 0.08, "cooldown_epochs": 2,
                  "decay_rate": 0.2, "decay_epochs": 1, "patience": 0}
SCHEDULE_KNOBS = [(name, key) for name in list_schedulers() for key in scheduler_info(name).params]


@pytest.mark.parametrize("name,key", SCHEDULE_KNOBS)
def test_every_schedule_hyperparameter_changes_the_lr_curve(name, key):
    declared = scheduler_info(name).params
    base = {k: v for k, v in SCHEDULE_BASE.items() if k in declared}
    curves = []
    for params in (base, {**base, key: SCHEDULE_OTHER[key]}):
        schedule = build_scheduler(fresh_optimizer(), name, params, epochs=6, steps_per_epoch=5)
        curves.append([schedule.lr(), *lr_curve(schedule, epochs=6, steps_per_epoch=5)])
    assert curves[0] != pytest.approx(curves[1])


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------

def test_unknown_optimizer_lists_the_names():
    with pytest.raises(InputError) as err:
        build_optimizer(Quadratic(), "adamx", lr=0.1, weight_decay=0.0)
    assert err.value.where == "optimizer.name"
    assert all(name in str(err.value) for name in list_optimizers())


def test_unknown_scheduler_lists_the_names():
    with pytest.raises(InputError) as err:
        build_scheduler(fresh_optimizer(), "linear", {}, epochs=2, steps_per_epoch=2)
    assert err.value.where == "scheduler.name"
    assert all(name in str(err.value) for name in list_schedulers())


@pytest.mark.parametrize("name,key", [("adam", "momentum"), ("momentum", "beta1"), ("novograd", "alpha")])
def test_a_parameter_of_another_optimizer_is_rejected(name, key):
    with pytest.raises(InputError) as err:
        resolve_optimizer_params(name, {key: 0.5})
    assert err.value.where == f"optimizer.{key}"


@pytest.mark.parametrize("name,key", [("cosine", "decay_rate"), ("cosine", "patience"), ("step", "min_lr")])
def test_a_parameter_a_schedule_does_not_use_is_rejected(name, key):
    with pytest.raises(InputError) as err:
        resolve_scheduler_params(name, {key: 0.5})
    assert err.value.where == f"scheduler.{key}"


@pytest.mark.parametrize("lr", [0.0, -1e-3])
def test_lr_not_above_zero_is_rejected(lr):
    with pytest.raises(InputError) as err:
        build_optimizer(Quadratic(), "adam", lr=lr, weight_decay=0.0)
    assert err.value.where == "optimizer.lr"


def test_negative_weight_decay_is_rejected():
    with pytest.raises(InputError) as err:
        build_optimizer(Quadratic(), "adamw", lr=1e-3, weight_decay=-0.1)
    assert err.value.where == "optimizer.weight_decay"


@pytest.mark.parametrize("name,params,key", [
    ("adam", {"beta1": 1.0}, "beta1"),
    ("rmsprop", {"momentum": -0.1}, "momentum"),
    ("fusedlamb", {"eps": 0.0}, "eps"),
])
def test_out_of_range_optimizer_parameter_is_rejected(name, params, key):
    with pytest.raises(InputError) as err:
        resolve_optimizer_params(name, params)
    assert err.value.where == f"optimizer.{key}"


@pytest.mark.parametrize("name,params,key", [
    ("step", {"decay_rate": 0.0}, "decay_rate"),
    ("step", {"decay_rate": 1.0}, "decay_rate"),
    ("plateau", {"decay_rate": 1.0}, "decay_rate"),
    ("plateau", {"patience": 1.5}, "patience"),
    ("cosine", {"warmup_lr": 0.0}, "warmup_lr"),
    ("tanh", {"warmup_epochs": -1}, "warmup_epochs"),
])
def test_out_of_range_schedule_parameter_is_rejected(name, params, key):
    with pytest.raises(InputError) as err:
        resolve_scheduler_params(name, params)
    assert err.value.where == f"scheduler.{key}"


def test_warmup_and_cooldown_filling_the_run_are_rejected():
    with pytest.raises(InputError, match="warmup_epochs"):
        build_scheduler(fresh_optimizer(), "cosine", {"warmup_epochs": 3, "cooldown_epochs": 2},
                        epochs=5, steps_per_epoch=2)


def test_docs_table_has_every_name():
    rows = {line.split("|")[1].strip().strip("`") for line in DOCS.read_text().splitlines()
            if line.startswith("| `")}
    assert set(list_optimizers()) | set(list_schedulers()) <= rows
