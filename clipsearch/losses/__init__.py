"""The loss registry: every loss clipsearch can train with, by name.

`list_losses()` names them; `build_loss(name, params, num_samples)` builds one after checking
its hyperparameters against the entry's `Param`s; `loss_info(name)` gives the entry. An unknown
name or parameter raises `InputError` listing what is available.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..hparams import Param, resolve_params
from ..registry import Registry
from .base import ContrastiveLoss, LossInfo
from .ce import CrossEntropyLoss
from .clip import ClipLoss, learnable_temperature_problem
from .isogclr import ISogCLRLoss, ISogCLRV2Loss, temperature_range_problem
from .sogclr import SogCLRLoss
from .supcon import NTXentLoss, SupConLoss

LOSSES: Registry[LossInfo] = Registry("loss", "loss.name")


def register(info: LossInfo) -> LossInfo:
    return LOSSES.register(info.name, info)


# Shared Param definitions: one range check per knob, whichever loss it belongs to.
def _temperature(default: float) -> Param:
    return Param(default, low=0.0, low_open=True, help="softmax temperature tau > 0")


GAMMA = Param(0.8, low=0.0, low_open=True, high=1.0,
              help="moving-average weight of the newest batch estimate, in (0, 1]; 1 = mini-batch")
EPS = Param(1e-8, low=0.0, help="added to u in the weights' denominator, >= 0")
ETA = Param(0.01, low=0.0, help="temperature step size, >= 0 (0 freezes the temperatures)")
BETA = Param(0.9, low=0.0, low_open=True, high=1.0,
             help="weight of the newest temperature gradient in its momentum, in (0, 1]")


def _rho(default: float) -> Param:
    return Param(default, low=0.0, help="DRO KL budget rho >= 0 (larger pushes temperatures down)")


def _temperature_range(tau_init: float, tau_min: float, tau_max: float) -> dict[str, Param]:
    return {
        "tau_init": Param(tau_init, low=0.0, low_open=True, help="every sample's starting temperature, > 0"),
        "tau_min": Param(tau_min, low=0.0, low_open=True, help="lowest temperature, > 0 and < tau_max"),
        "tau_max": Param(tau_max, low=0.0, low_open=True, help="highest temperature, > tau_min"),
    }


register(LossInfo(
    name="clip",
    cls=ClipLoss,
    description="mini-batch InfoNCE (CLIP), fixed or learnable temperature",
    params={
        "temperature": _temperature(0.01),
        "learnable_temperature": Param(0.0, low=0.0, high=1.0, help="1: learn tau as open_clip's logit_scale"),
    },
    checks=(learnable_temperature_problem,),
))


register(LossInfo(
    name="sogclr",
    cls=SogCLRLoss,
    description="global contrastive loss by per-sample moving averages (SogCLR), fixed temperature",
    params={"gamma": GAMMA, "temperature": _temperature(0.01), "eps": EPS},
))

register(LossInfo(
    name="isogclr",
    cls=ISogCLRLoss,
    description="SogCLR with per-sample temperatures learnt by DRO (iSogCLR)",
    params={"gamma": GAMMA, **_temperature_range(0.01, 0.005, 0.05),
            "rho_I": _rho(8.0), "rho_T": _rho(8.0), "eta": ETA, "beta": BETA, "eps": EPS},
    checks=(temperature_range_problem,),
))

register(LossInfo(
    name="isogclr_v2",
    cls=ISogCLRV2Loss,
    description="iSogCLR with raw-similarity negatives and a positive-pair DRO term (iSogCLR_New_v2)",
    params={"gamma": GAMMA, **_temperature_range(0.07, 0.005, 1.0),
            "rho_I": _rho(6.0), "rho_T": _rho(6.0), "eta": ETA, "beta": BETA,
            "lambda_": Param(1.0, low=0.0, low_open=True, help="positive-term scale lambda > 0"),
            "eps": EPS},
    checks=(temperature_range_problem,),
))

register(LossInfo(
    name="supcon",
    cls=SupConLoss,
    description="supervised contrastive loss over labelled views (image-only)",
    params={"temperature": _temperature(0.07)},
    sampler="balanced",
))

register(LossInfo(
    name="ntxent",
    cls=NTXentLoss,
    description="SimCLR's NT-Xent over two augmented views per image (image-only)",
    params={"temperature": _temperature(0.1)},
    min_views=2,
))

register(LossInfo(
    name="ce",
    cls=CrossEntropyLoss,
    description="supervised cross-entropy on classifier logits (classification baseline)",
    params={"label_smoothing": Param(0.0, low=0.0, high=1.0, high_open=True,
                                     help="probability mass spread over all classes, in [0, 1)")},
    views=1,
    classifier=True,
))


def list_losses() -> list[str]:
    return LOSSES.names()


def loss_info(name: str, where: str = "loss.name") -> LossInfo:
    return LOSSES.get(name, where)


def resolve_loss_params(name: str, params: dict[str, Any], where: str = "loss") -> dict[str, float]:
    """Defaults filled in, every given key checked against the entry; raises InputError."""
    info = loss_info(name, where=f"{where}.name")
    resolved = resolve_params(f"loss {name!r}", info.params, params, where)
    for check in info.checks:
        problem = check(resolved)
        if problem:
            raise InputError(problem, where=where)
    return resolved


def build_loss(name: str, params: dict[str, Any] | None = None, num_samples: int | None = None) -> ContrastiveLoss:
    """Build a loss; `num_samples` (the training-set size) sizes the global losses' state."""
    info = loss_info(name)
    resolved = resolve_loss_params(name, params or {})
    if getattr(info.cls, "needs_index", False):
        if not num_samples:
            raise ValueError(f"loss {name!r} keeps per-sample state: pass num_samples")
        return info.cls(num_samples=num_samples, **resolved)
    return info.cls(**resolved)


__all__ = ["LOSSES", "ContrastiveLoss", "LossInfo", "Param", "build_loss", "list_losses", "loss_info",
           "register", "resolve_loss_params"]
