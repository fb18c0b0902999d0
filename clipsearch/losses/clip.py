"""`clip`: mini-batch InfoNCE (Radford et al., 2021), as open_clip's ClipLoss.

L = 1/2 [CE(S / tau, arange(B)) + CE(S^T / tau, arange(B))], S = e_I e_T^T.

tau is either fixed (`temperature`, any value > 0, used as given) or learnable
(`learnable_temperature=1`): then a `logit_scale` parameter starts at ln(1 / temperature) and is
kept <= ln(100), as in open_clip, so a learnable tau starts at 0.01 or above. The parameter lives
in this module, so the optimizer must see the loss's parameters (the trainer passes them).

The bound is a projection, not a clamp inside the graph. open_clip clamps the parameter in place
after each optimizer step; this module does the same at the start of each forward, i.e. after
the previous step and before the value is used, so the trainer needs no extra line and every
forward sees the same value as open_clip's. The forward then uses the parameter itself, whose
gradient is the true one also at the bound. A `clamp(max=ln 100)` inside the graph would instead
give a zero gradient at and above the bound: a tau started at 0.01 (float32(ln 100) lies just
above ln 100) would never move. A straight-through clamp would let the parameter drift above the
bound unseen while the loss wants a sharper softmax, and come back only after as many steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import ContrastiveLoss

MAX_LOGIT_SCALE = math.log(100.0)
#: the lowest temperature a learnable logit_scale can hold: exp(-MAX_LOGIT_SCALE)
MIN_LEARNABLE_TEMPERATURE = 0.01


def learnable_temperature_problem(params: dict[str, float]) -> str | None:
    """Why a learnable temperature cannot start where asked, or None (a registry check)."""
    if params["learnable_temperature"] and params["temperature"] < MIN_LEARNABLE_TEMPERATURE:
        return (f"temperature={params['temperature']} is below {MIN_LEARNABLE_TEMPERATURE}, the lowest a "
                f"learnable temperature can hold (logit_scale <= ln 100, as in open_clip); fix: set "
                f"loss.temperature >= {MIN_LEARNABLE_TEMPERATURE}, or learnable_temperature: 0 for a "
                f"fixed temperature below it")
    return None


class ClipLoss(ContrastiveLoss):
    def __init__(self, *, temperature: float, learnable_temperature: float):
        super().__init__()
        params = {"temperature": temperature, "learnable_temperature": learnable_temperature}
        problem = learnable_temperature_problem(params)
        if problem:
            raise ValueError(f"loss 'clip': {problem}")
        self.learnable = bool(learnable_temperature)
        init = torch.tensor(math.log(1.0 / temperature))
        if self.learnable:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)

    def forward(self, image_features, text_features, index=None, labels=None):
        if image_features.shape[0] < 2:
            raise ValueError("clip loss needs a batch of at least 2 pairs; drop_last or a larger batch fixes it")
        if self.learnable:
            # open_clip's post-step projection (see the module docstring); in place, outside the graph
            with torch.no_grad():
                self.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
        scale = self.logit_scale.exp()
        logits = scale * image_features @ text_features.T
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return {"loss": loss, "temperature": (1.0 / scale).detach()}
