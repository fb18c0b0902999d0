"""`clip`: mini-batch InfoNCE (Radford et al., 2021), as open_clip's ClipLoss.

L = 1/2 [CE(S / tau, arange(B)) + CE(S^T / tau, arange(B))], S = e_I e_T^T.

tau is either fixed (`temperature`) or learnable (`learnable_temperature=1`): then a
`logit_scale` parameter starts at ln(1 / temperature) and is clamped to <= ln(100), as in
open_clip. The parameter lives in this module, so the optimizer must see the loss's parameters
(the trainer passes them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import ContrastiveLoss

MAX_LOGIT_SCALE = math.log(100.0)


class ClipLoss(ContrastiveLoss):
    def __init__(self, temperature: float = 0.01, learnable_temperature: float = 0.0):
        super().__init__()
        init = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)

    def forward(self, image_features, text_features, index=None, labels=None):
        if image_features.shape[0] < 2:
            raise ValueError("clip loss needs a batch of at least 2 pairs; drop_last or a larger batch fixes it")
        scale = self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        logits = scale * image_features @ text_features.T
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return {"loss": loss, "temperature": (1.0 / scale).detach()}
