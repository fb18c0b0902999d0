"""Optimizers and learning-rate schedules by name (timm and torch.optim underneath).

Optimizers: `list_optimizers()`, `optimizer_info(name)`, `resolve_optimizer_params(name, params)`,
`build_optimizer(modules, name, lr, weight_decay, params)`. Schedules: `list_schedulers()`,
`scheduler_info(name)`, `resolve_scheduler_params(name, params)`,
`build_scheduler(optimizer, name, params, epochs, steps_per_epoch)` -> `Schedule`.

Each name has a frozen registry entry (timm's OptimInfo idea) that says what class runs, which
algorithm that is, whether it uses a fused / multi-tensor kernel, which other name runs the same
algorithm, and the hyperparameters it accepts (`Param`s: default and range). A knob is declared
only where it changes the update or the schedule, so a search space never turns a dead knob.
docs/optimizers.md has the tables.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from timm.optim import Lamb, NvNovoGrad
from timm.optim._param_groups import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler, StepLRScheduler, TanhLRScheduler
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from .errors import InputError
from .hparams import COMMON_OPTIMIZER_PARAMS, Param, resolve_params
from .registry import Registry


# ----------------------------------------------------------------------------------------------
# NovoGrad with apex's FusedNovoGrad rule (timm has none: its NvNovoGrad follows the paper)
# ----------------------------------------------------------------------------------------------

class ApexNovoGrad(torch.optim.Optimizer):
    """NovoGrad with the update rule of apex.optimizers.FusedNovoGrad at apex's defaults.

    Written here because timm's NvNovoGrad follows the paper (Ginsburg et al. 2019,
    arXiv:1905.11286: the moment accumulates gradients already divided by the layer norm, no
    bias correction), while apex's kernel (reg_inside_moment=False, grad_averaging=True,
    bias_correction=True, norm_type=2, init_zero=False) runs, per tensor p with gradient g:

        s_t = beta2 * s_{t-1} + (1 - beta2) * ||g_t||^2     (s_1 = ||g_1||^2)
        m_t = beta1 * m_{t-1} + (1 - beta1) * g_t
        p  -= lr * ( (m_t / (1 - beta1^t)) / (sqrt(s_t) / sqrt(1 - beta2^t) + eps) + wd * p )

    so weight decay is decoupled from the moments. `foreach=True` runs torch's multi-tensor
    (_foreach) kernels, `False` a loop over tensors with the same arithmetic.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.95, 0.98),
                 eps: float = 1e-8, weight_decay: float = 0.0, foreach: bool = True):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            tensors = self._group_tensors(group)
            if not tensors[0]:
                continue
            # one step count per group, as apex keeps it
            group["step"] = group.get("step", 0) + 1
            update = _novograd_foreach if group["foreach"] else _novograd_per_tensor
            update(*tensors, group)
        return loss

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        # torch casts loaded state to each parameter's dtype: put the norms of half-precision
        # tensors back in float32, from the saved values
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        params = [p for group in self.param_groups for p in group["params"]]
        for saved_id, p in zip(saved_ids, params):
            norm = state_dict["state"].get(saved_id, {}).get("grad_norm_sq_avg")
            if norm is not None:
                self.state[p]["grad_norm_sq_avg"] = norm.to(p.device, _norm_dtype(p), copy=True)

    def _group_tensors(self, group):
        params, grads, exp_avgs, norm_sq_avgs = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p)
                # apex's init_zero=False: the first blend keeps the first norm unchanged
                state["grad_norm_sq_avg"] = torch.linalg.vector_norm(p.grad, dtype=_norm_dtype(p)).square()
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            norm_sq_avgs.append(state["grad_norm_sq_avg"])
        return params, grads, exp_avgs, norm_sq_avgs


def _norm_dtype(p: torch.Tensor) -> torch.dtype:
    # norms of half-precision tensors are kept in float32, as apex does: their squares overflow fp16
    return torch.promote_types(p.dtype, torch.float32)


def _novograd_scalars(group) -> tuple[float, float, float, float]:
    beta1, beta2 = group["betas"]
    bias1 = 1 - beta1 ** group["step"]
    bias2_sqrt = math.sqrt(1 - beta2 ** group["step"])
    return beta1, beta2, bias1, bias2_sqrt


def _novograd_per_tensor(params, grads, exp_avgs, norm_sq_avgs, group) -> None:
    beta1, beta2, bias1, bias2_sqrt = _novograd_scalars(group)
    for p, g, m, s in zip(params, grads, exp_avgs, norm_sq_avgs):
        s.lerp_(torch.linalg.vector_norm(g, dtype=s.dtype).square(), 1 - beta2)
        m.lerp_(g, 1 - beta1)
        denom = s.sqrt() / bias2_sqrt + group["eps"]
        update = m / (bias1 * denom) + group["weight_decay"] * p
        p.add_(update, alpha=-group["lr"])


def _novograd_foreach(params, grads, exp_avgs, norm_sq_avgs, group) -> None:
    # torch's foreach kernels take tensors of one device and dtype at a time
    buckets = torch.optim.Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, exp_avgs, norm_sq_avgs])
    for tensors, _ in buckets.values():
        _novograd_foreach_bucket(*tensors, group)


def _novograd_foreach_bucket(params, grads, exp_avgs, norm_sq_avgs, group) -> None:
    beta1, beta2, bias1, bias2_sqrt = _novograd_scalars(group)
    norms = torch._foreach_norm(grads, 2, dtype=norm_sq_avgs[0].dtype)
    torch._foreach_lerp_(norm_sq_avgs, torch._foreach_mul(norms, norms), 1 - beta2)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    denoms = torch._foreach_add(torch._foreach_div(torch._foreach_sqrt(norm_sq_avgs), bias2_sqrt),
                                group["eps"])
    torch._foreach_mul_(denoms, bias1)
    updates = torch._foreach_div(exp_avgs, denoms)
    if group["weight_decay"]:
        torch._foreach_add_(updates, params, alpha=group["weight_decay"])
    torch._foreach_add_(params, updates, alpha=-group["lr"])


# ----------------------------------------------------------------------------------------------
# Optimizer registry
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OptimInfo:
    """What an optimizer name runs.

    runs: the class instantiated (with `fixed` keyword arguments on top of the hyperparameters).
    algorithm: the update rule, with how weight decay enters it.
    fused: True for the names of apex's fused optimizers (seed 001 searched them by name).
    kernel_flag: the constructor flag that selects a fused or multi-tensor kernel (set True by
        build_optimizer for every name that has one; False gives the per-tensor twin with the
        same arithmetic).
    same_as: another name that runs the same algorithm (a search over both explores one arm twice).
    params: hyperparameters besides lr and weight_decay; beta1/beta2 become `betas`.
    """

    name: str
    runs: type[torch.optim.Optimizer]
    algorithm: str
    fused: bool = False
    kernel_flag: str | None = None
    same_as: str | None = None
    params: Mapping[str, Param] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)


def _betas_eps(beta1: float, beta2: float, eps: float) -> dict[str, Param]:
    return {
        "beta1": Param(beta1, low=0.0, high=1.0, high_open=True, help="decay of the first moment"),
        "beta2": Param(beta2, low=0.0, high=1.0, high_open=True, help="decay of the second moment"),
        "eps": Param(eps, low=0.0, low_open=True, help="added to the denominator"),
    }


_MOMENTUM = Param(0.9, low=0.0, high=1.0, high_open=True, help="momentum factor in [0, 1)")


_ADAM = _betas_eps(0.9, 0.999, 1e-8)
# NovoGrad's betas as timm and apex defaults for it: (0.95, 0.98)
_NOVOGRAD = _betas_eps(0.95, 0.98, 1e-8)

OPTIMIZERS: Registry[OptimInfo] = Registry("optimizer", "optimizer.name")
for _info in (
    # torch runs its optimizers per tensor on the CPU unless asked: every name that has a fused
    # (Adam, AdamW, SGD) or multi-tensor (RAdam, RMSprop) kernel gets it, on CPU and CUDA alike
    # (AdamW on one 14M-element tensor: 116 ms per tensor, 11 ms fused)
    OptimInfo("adam", torch.optim.Adam, "Adam, L2 weight decay added to the gradient", kernel_flag="fused",
              params=_ADAM),
    OptimInfo("adamw", torch.optim.AdamW, "AdamW, decoupled weight decay", kernel_flag="fused", params=_ADAM),
    OptimInfo("radam", torch.optim.RAdam, "RAdam (rectified Adam), L2 weight decay", kernel_flag="foreach",
              params=_ADAM),
    OptimInfo("novograd", NvNovoGrad,
              "NovoGrad as in the paper: layer-normalised gradient + L2 decay inside the moment, "
              "no bias correction", params=_NOVOGRAD),
    OptimInfo("nvnovograd", NvNovoGrad, "NovoGrad as in the paper (timm's NvNovoGrad)",
              same_as="novograd", params=_NOVOGRAD),
    # timm names apex FusedAdam(adam_w_mode=False) 'fusedadam' (and adam_w_mode=True 'fusedadamw'):
    # Adam with L2 decay, the rule of 'adam', run by torch's fused kernel
    OptimInfo("fusedadam", torch.optim.Adam, "Adam, L2 weight decay added to the gradient",
              fused=True, kernel_flag="fused", same_as="adam", params=_ADAM),
    # timm's Lamb follows apex FusedLAMB: global grad-norm clip at 1, decay added to the update
    # before the trust ratio, no trust ratio for tensors without decay
    OptimInfo("fusedlamb", Lamb, "LAMB (apex FusedLAMB rule)", fused=True, kernel_flag="foreach",
              params=_betas_eps(0.9, 0.999, 1e-6)),
    OptimInfo("fusednovograd", ApexNovoGrad,
              "NovoGrad, apex FusedNovoGrad rule: moment of raw gradients, bias correction, "
              "decoupled weight decay", fused=True, kernel_flag="foreach", params=_NOVOGRAD),
    # alpha 0.9 is timm's default for rmsprop (torch's is 0.99)
    OptimInfo("rmsprop", torch.optim.RMSprop, "RMSprop with momentum, L2 weight decay", kernel_flag="foreach",
              params={"momentum": _MOMENTUM,
                      "alpha": Param(0.9, low=0.0, high=1.0, high_open=True,
                                     help="decay of the squared-gradient average"),
                      "eps": Param(1e-8, low=0.0, low_open=True, help="added to the denominator")}),
    OptimInfo("momentum", torch.optim.SGD, "SGD with classical (heavy-ball) momentum, L2 weight decay",
              kernel_flag="fused",
              params={"momentum": _MOMENTUM}, fixed={"nesterov": False}),
):
    OPTIMIZERS.register(_info.name, _info)



def list_optimizers() -> list[str]:
    return OPTIMIZERS.names()


def optimizer_info(name: str, where: str = "optimizer.name") -> OptimInfo:
    return OPTIMIZERS.get(name, where)


def resolve_optimizer_params(name: str, params: dict[str, Any] | None,
                             where: str = "optimizer") -> dict[str, float]:
    """The optimizer's hyperparameters with defaults filled in; InputError names a bad key."""
    info = optimizer_info(name, where=f"{where}.name")
    return resolve_params(f"optimizer {name!r}", dict(info.params), params or {}, where)


def optimizer_kwargs(name: str, lr: float, weight_decay: float,
                     params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments build_optimizer gives `optimizer_info(name).runs`."""
    info = optimizer_info(name)
    resolve_params(f"optimizer {name!r}", COMMON_OPTIMIZER_PARAMS,
                   {"lr": lr, "weight_decay": weight_decay}, "optimizer")
    kwargs: dict[str, Any] = resolve_optimizer_params(name, params)
    if "beta1" in kwargs:
        kwargs["betas"] = (kwargs.pop("beta1"), kwargs.pop("beta2"))
    kwargs.update(info.fixed, lr=lr, weight_decay=weight_decay)
    if info.kernel_flag:
        kwargs[info.kernel_flag] = True
    return kwargs


def param_groups(modules: nn.Module | Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Trainable parameters of all `modules`: a decay group and a no-decay group.

    Tensors with ndim <= 1 (biases, norm scales, a learnable temperature) and names a module
    lists in `no_weight_decay()` (timm models) get no decay: decaying them shrinks what is no
    weight matrix. Parameters shared between modules are counted once.
    """
    modules = [modules] if isinstance(modules, nn.Module) else list(modules)
    merged: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in modules:
        skip = getattr(module, "no_weight_decay", lambda: set())()
        for group in param_groups_weight_decay(module, weight_decay, no_weight_decay_list=skip):
            fresh = [p for p in group["params"] if id(p) not in seen]
            seen.update(id(p) for p in fresh)
            merged.setdefault(group["weight_decay"], []).extend(fresh)
    groups = [{"params": ps, "weight_decay": wd} for wd, ps in sorted(merged.items()) if ps]
    if not groups:
        raise ValueError("build_optimizer got no trainable parameter (all have requires_grad=False)")
    return groups


def build_optimizer(modules: nn.Module | Iterable[nn.Module], name: str, lr: float,
                    weight_decay: float, params: dict[str, Any] | None = None) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters of `modules` (the model and the loss, whose
    temperature may be learnable), without weight decay on biases and norm parameters."""
    kwargs = optimizer_kwargs(name, lr, weight_decay, params)
    return optimizer_info(name).runs(param_groups(modules, weight_decay), **kwargs)


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------

class Schedule:
    """The learning rate of one run, driven by the trainer's two calls.

    after_step(num_updates): after every optimizer step, with the number of updates done so far;
    timm's schedules here are functions of that count (t_in_epochs=False).
    after_epoch(epoch, metric): at the end of epoch `epoch` (0-based) with the validation
    objective (higher is better, or None when not validated); only `plateau` uses it.
    """

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, per_update: Scheduler,
                 per_epoch: ReduceLROnPlateau | None = None, warmup_updates: int = 0,
                 steps_per_epoch: int = 1):
        self.name, self.optimizer = name, optimizer
        self._per_update, self._per_epoch = per_update, per_epoch
        self._warmup_updates, self._steps_per_epoch = warmup_updates, steps_per_epoch

    def after_step(self, num_updates: int) -> None:
        # a plateau schedule owns the lr once warmup is over
        if self._per_epoch is None or num_updates <= self._warmup_updates:
            self._per_update.step_update(num_updates)

    def after_epoch(self, epoch: int, metric: float | None = None) -> None:
        warmed_up = (epoch + 1) * self._steps_per_epoch >= self._warmup_updates
        if self._per_epoch is not None and metric is not None and warmed_up:
            self._per_epoch.step(metric)

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        state = {"name": self.name, "per_update": self._per_update.state_dict()}
        if self._per_epoch is not None:
            state["per_epoch"] = self._per_epoch.state_dict()
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"a {state.get('name')!r} schedule's state cannot resume a {self.name!r} schedule")
        state = copy.deepcopy(state)
        self._per_update.load_state_dict(state["per_update"])
        if self._per_epoch is not None:
            self._per_epoch.load_state_dict(state["per_epoch"])


@dataclass(frozen=True)
class SchedInfo:
    """A schedule name: the timm / torch class behind it, how it steps, what it accepts."""

    name: str
    runs: str
    steps: str  # "update" or "epoch"
    description: str
    build: Callable[..., Schedule]
    params: Mapping[str, Param] = field(default_factory=dict)
    #: params counted in whole epochs (plateau's counters)
    whole_numbers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Span:
    """A schedule's lengths in optimizer updates."""

    total: int
    warmup: int
    steps_per_epoch: int

    def updates(self, epochs: float) -> int:
        return round(epochs * self.steps_per_epoch)


def _warmup_args(p: dict[str, float], span: _Span) -> dict[str, Any]:
    # warmup is a prefix: the lr climbs from warmup_lr to the base lr, reached at update `warmup`
    return dict(warmup_t=span.warmup, warmup_lr_init=p["warmup_lr"], warmup_prefix=True)


def _annealing(cls) -> Callable[..., Schedule]:
    """cosine / tanh: warmup, anneal to min_lr, then cooldown_epochs held at min_lr."""
    def build(name, optimizer, p, span: _Span) -> Schedule:
        t_initial = span.total - span.warmup - span.updates(p["cooldown_epochs"])
        if t_initial <= 0:
            raise InputError(
                "warmup_epochs + cooldown_epochs leave no epoch to anneal in",
                where="scheduler.warmup_epochs",
                fix=f"keep warmup_epochs + cooldown_epochs below the {span.total // span.steps_per_epoch} epochs")
        timm_schedule = cls(optimizer, t_initial=t_initial, lr_min=p["min_lr"], t_in_epochs=False,
                            **_warmup_args(p, span))
        return Schedule(name, optimizer, timm_schedule)
    return build


def _build_step(name, optimizer, p, span: _Span) -> Schedule:
    decay_t = max(1, span.updates(p["decay_epochs"]))
    timm_schedule = StepLRScheduler(optimizer, decay_t=decay_t, decay_rate=p["decay_rate"],
                                    t_in_epochs=False, **_warmup_args(p, span))
    return Schedule(name, optimizer, timm_schedule)


def _constant_warmup(optimizer, p, span: _Span) -> StepLRScheduler:
    # timm's 'constant' schedule: warmup, then the base lr
    return StepLRScheduler(optimizer, decay_t=1, decay_rate=1.0, t_in_epochs=False,
                           **_warmup_args(p, span))


def _build_constant(name, optimizer, p, span: _Span) -> Schedule:
    return Schedule(name, optimizer, _constant_warmup(optimizer, p, span))


def _build_plateau(name, optimizer, p, span: _Span) -> Schedule:
    # torch's ReduceLROnPlateau rather than timm's PlateauLRScheduler wrapping it: timm's saves
    # only part of the plateau state, so a resumed run would restart the patience count
    plateau = ReduceLROnPlateau(optimizer, mode="max", factor=p["decay_rate"],
                                patience=int(p["patience"]), cooldown=int(p["cooldown_epochs"]),
                                min_lr=p["min_lr"])
    return Schedule(name, optimizer, _constant_warmup(optimizer, p, span), per_epoch=plateau,
                    warmup_updates=span.warmup, steps_per_epoch=span.steps_per_epoch)


_WARMUP = {
    "warmup_epochs": Param(0.0, low=0.0, help="epochs of linear warmup from warmup_lr (fractions allowed)"),
    "warmup_lr": Param(1e-5, low=0.0, low_open=True, help="lr at the first update of warmup, > 0"),
}
_MIN_LR = {"min_lr": Param(0.0, low=0.0, help="lowest lr, >= 0")}


# 1 is left out: it would make the decay and every knob timing it do nothing
_DECAY_RATE = Param(0.1, low=0.0, high=1.0, low_open=True, high_open=True,
                    help="factor in (0, 1) the lr is multiplied by at each decay")


_ANNEALING = {**_WARMUP, **_MIN_LR,
              "cooldown_epochs": Param(0.0, low=0.0, help="final epochs held at min_lr")}

SCHEDULERS: Registry[SchedInfo] = Registry("scheduler", "scheduler.name")
for _info in (
    SchedInfo("cosine", "timm CosineLRScheduler", "update", "warmup, half-cosine to min_lr, cooldown",
              _annealing(CosineLRScheduler), _ANNEALING),
    SchedInfo("tanh", "timm TanhLRScheduler", "update", "warmup, tanh decay to min_lr, cooldown",
              _annealing(TanhLRScheduler), _ANNEALING),
    SchedInfo("step", "timm StepLRScheduler", "update",
              "warmup, then lr * decay_rate every decay_epochs", _build_step,
              {**_WARMUP, "decay_rate": _DECAY_RATE,
               "decay_epochs": Param(30.0, low=0.0, low_open=True, help="epochs between decays, > 0")}),
    SchedInfo("plateau", "torch ReduceLROnPlateau (mode='max')", "epoch",
              "warmup, then lr * decay_rate when the objective stalls for patience epochs",
              _build_plateau,
              {**_WARMUP, **_MIN_LR, "decay_rate": _DECAY_RATE,
               "patience": Param(10, low=0.0, help="epochs without improvement before a decay"),
               "cooldown_epochs": Param(0, low=0.0, help="epochs after a decay before patience counts again")},
              whole_numbers=("patience", "cooldown_epochs")),
    SchedInfo("constant", "timm StepLRScheduler (decay_rate=1)", "update", "warmup, then the base lr",
              _build_constant, _WARMUP),
):
    SCHEDULERS.register(_info.name, _info)


def list_schedulers() -> list[str]:
    return SCHEDULERS.names()


def scheduler_info(name: str, where: str = "scheduler.name") -> SchedInfo:
    return SCHEDULERS.get(name, where)


def resolve_scheduler_params(name: str, params: dict[str, Any] | None,
                             where: str = "scheduler") -> dict[str, float]:
    """The schedule's hyperparameters with defaults filled in; InputError names a bad key."""
    info = scheduler_info(name, where=f"{where}.name")
    resolved = resolve_params(f"scheduler {name!r}", dict(info.params), params or {}, where)
    for key in info.whole_numbers:
        if resolved[key] != int(resolved[key]):
            raise InputError(f"{key}={resolved[key]} is not a whole number of epochs",
                             where=f"{where}.{key}", fix=f"give {key} as an integer")
    return resolved


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, params: dict[str, Any] | None,
                    epochs: int, steps_per_epoch: int) -> Schedule:
    """The schedule `name` over `epochs` epochs of `steps_per_epoch` optimizer updates each.

    Sets the optimizer's lr to its starting value (warmup_lr when there is a warmup).
    """
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"a schedule needs epochs >= 1 and steps_per_epoch >= 1, "
                         f"got {epochs} and {steps_per_epoch}")
    info = scheduler_info(name)
    p = resolve_scheduler_params(name, params)
    span = _Span(total=epochs * steps_per_epoch, warmup=round(p["warmup_epochs"] * steps_per_epoch),
                 steps_per_epoch=steps_per_epoch)
    return info.build(name, optimizer, p, span)
