"""`sogclr`: the global contrastive loss optimised with per-sample moving averages.

Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning: Small Batch Does
Not Harm Performance", ICML 2022 (Algorithm 1, the two-way loss of its Eq. (4)).

Notation (shapes for a batch of B pairs out of a data set of N):
    e_I, e_T   (B, d) L2-normalised image and text embeddings
    S          (B, B) = e_I e_T^T; S_ii is the positive pair
    index      (B,)   each pair's position 0..N-1 in the training set

For image anchor i (the text side is the same over the columns of S):
    h_ij = S_ij - S_ii,  A_ij = h_ij / tau
    b_i  <- the log-scale of the step (below)                      a shift, for stability
    E_ij = exp(A_ij - b_i) for j != i, 0 on the diagonal
    g_i  = sum_j E_ij / (B - 1)
    u_i  <- (1 - gamma) u_i exp(b_i_old - b_i) + gamma g_i         (u_i = g_i at the first visit)
    w_ij = E_ij / (u_i + eps)
    L_I  = mean_i sum_j w_ij h_ij / (B - 1);   L = L_I + L_T

u_i exp(b_i) is the moving average of mean_{j != i} exp(A_ij); b_i only says in which scale u_i is
held, and the weights E / u do not depend on it. The paper's b_i is a running max that never
decreases. That is numerically unsafe: once a sample's negatives score ~18 tau below its past
maximum, u_i falls under eps = 1e-8 and its weights, so its gradient, go to zero (at tau 0.01
with drifting features: 0.41x the exact gradient at the 14th visit, 0.008x at the 17th, 3e-11x at the
30th). Here b_i is re-based at every step to the log of the larger of the two terms of the
update, log((1 - gamma) u_i_old exp(b_i_old)) and log(gamma mean_j exp(A_ij)), so u_i lies in
[1, 2] and eps is a guard that changes no weight by more than 1e-8 relative. The estimator's
value and gradient are the equations' (eps -> 0); only the scale of the stored u, b changes, and
a checkpoint written with running-max b holds the same u exp(b), so it loads and continues.

Everything inside exp() and every weight is detached, so the gradient flows through S only and
estimates the gradient of the global loss tau * mean_i log mean_{j != i} exp(h_ij / tau) over the
whole data set, whatever the batch size.

Scaling: the sum over negatives is divided by (B - 1) in sogclr, isogclr and isogclr_v2 alike, so
their loss values and gradients are on the same scale (each side ~ a mean over negatives) and a
learning rate found for one transfers to the others.

The surrogate L is no progress monitor (its value hovers near 0 by construction); the returned
dict carries the estimated global loss beside it:
    global_loss = sum over both sides of mean_i [tau_i (log u_i + b_i) - X_ii]
where X is the score matrix the negatives contrast (h here, so X_ii = 0): an estimate of
tau * log mean_{j != i} exp(h_ij / tau) that the moving averages make global.

The state (u, b per side, and which samples were seen) lives in registered buffers sized by N,
so it moves with `.to()` and is saved and restored with `state_dict()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import ContrastiveLoss, check_pair_features

#: the two anchor sides: "I" anchors are images (rows of S), "T" anchors are texts (columns)
SIDES = ("I", "T")


def similarity_matrix(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """S = e_I e_T^T (B, B) in at least float32.

    Autocast is switched off here because the moving averages divide by tau ~ 0.01: a bfloat16 S
    (3 significant digits) would put errors of ~0.5 into A = h / tau and into the state.
    """
    dtype = torch.promote_types(image_features.dtype, torch.float32)
    with torch.autocast(device_type=image_features.device.type, enabled=False):
        return image_features.to(dtype) @ text_features.to(dtype).T


def last_occurrence(index: torch.Tensor) -> torch.Tensor:
    """(B,) position of the last batch entry whose index equals index[p], for every p.

    A sample repeated in one batch (a padded distributed sampler) computes its update from the same
    old state at each position; the last position's update is the one kept. Writing
    `buffer[index] = value[last_occurrence(index)]` writes the same value for every copy, so the
    result does not depend on the order in which the device resolves duplicate writes, and no
    host sync is needed.
    """
    positions = torch.arange(index.shape[0], device=index.device)
    same = index[:, None] == index[None, :]
    return torch.where(same, positions[None, :], -1).amax(dim=1)


@dataclass
class MovingAverage:
    """A step of `rebased_moving_average`: the new average u exp(b) and this batch's terms E."""

    u: torch.Tensor  # (...,) in [1, 2]
    b: torch.Tensor  # (...,) log-scale: u exp(b) is the moving average
    E: torch.Tensor  # (..., K) exp(logits - b[..., None])


def rebased_moving_average(u_old: torch.Tensor, b_old: torch.Tensor, seen: torch.Tensor,
                           logits: torch.Tensor, gamma: float) -> MovingAverage:
    """D <- (1 - gamma) D + gamma mean_k exp(logits_k) (D = mean exp(logits) at the first visit),
    with D held as u exp(b).

    u_old, b_old, seen: (...,) the state (D_old = u_old exp(b_old), meaningless where not seen);
    logits: (..., K), -inf where an entry is left out; the mean divides by the finite entries' count.
    b is re-based to the log of the larger of the two terms, so u lies in [1, 2] whatever the
    drift between visits (a running max of the logits instead lets u decay without bound, under
    any eps added to it), and E = exp(logits - b) neither overflows nor loses the weights' scale.
    """
    count = torch.isfinite(logits).sum(dim=-1)
    log_batch_mean = torch.logsumexp(logits, dim=-1) - torch.log(count.to(logits.dtype))
    new_weight = torch.where(seen, torch.tensor(gamma, dtype=logits.dtype, device=logits.device),
                             torch.ones((), dtype=logits.dtype, device=logits.device))
    log_new = torch.log(new_weight) + log_batch_mean
    # log((1 - gamma) D_old); -inf for an unseen sample and for gamma = 1, whose old term is 0
    log_old = torch.where(seen, b_old + torch.log((1.0 - gamma) * u_old), float("-inf"))
    b = torch.maximum(log_old, log_new)
    E = torch.exp(logits - b[..., None])  # exp(-inf) = 0 where an entry is left out
    u = torch.exp(log_old - b) + new_weight * E.sum(dim=-1) / count
    return MovingAverage(u=u, b=b, E=E)


@dataclass
class AnchorStep:
    """One anchor side's step: the loss term and the state after the update, per batch position."""

    loss: torch.Tensor             # scalar with grad: mean_i sum_j w_ij X_ij / (B - 1)
    u: torch.Tensor                # (B,) updated moving average, in the scale exp(b)
    b: torch.Tensor                # (B,) its log-scale
    log_denominator: torch.Tensor  # (B,) log u_i + b_i, estimates log mean_{j != i} exp(A_ij)
    weighted_logit: torch.Tensor   # (B,) sum_j w_ij A_ij / (B - 1)


class GlobalContrastiveLoss(ContrastiveLoss):
    """What sogclr, isogclr and isogclr_v2 share: the moving-average state and its update.

    Subclasses say which temperature each anchor uses (`anchor_temperatures`), which scores the
    negatives contrast (`negative_scores`), and what else a step updates (`finish_step`).
    """

    needs_index = True
    name = "global"

    def __init__(self, num_samples: int, gamma: float, eps: float):
        super().__init__()
        if int(num_samples) < 1:
            raise ValueError(f"loss {self.name!r} keeps per-sample state: num_samples must be the "
                             f"training-set size (>= 1), got {num_samples}")
        self.num_samples = int(num_samples)
        self.gamma = float(gamma)
        self.eps = float(eps)
        for side in SIDES:
            self.register_buffer(f"u_{side}", torch.zeros(self.num_samples))
            self.register_buffer(f"b_{side}", torch.zeros(self.num_samples))
        # the first visit sets u_i = g_i: the zero-initialised u must not be averaged in
        self.register_buffer("seen", torch.zeros(self.num_samples, dtype=torch.bool))

    # -- hooks ---------------------------------------------------------------------------------
    def anchor_temperatures(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """{side: (B,) temperature of each anchor}."""
        raise NotImplementedError

    def negative_scores(self, S: torch.Tensor) -> dict[str, torch.Tensor]:
        """{side: (B, B) scores X, row = anchor}: h = S - S_ii by default (SogCLR's h_ij)."""
        positive = S.diagonal()[:, None]
        return {"I": S - positive, "T": S.T - positive}

    def finish_step(self, S, index, last, steps, temperatures) -> tuple[torch.Tensor | None, dict]:
        """Updates beyond u and b (temperatures, ...): (an extra loss term or None, diagnostics)."""
        return None, {}

    # -- the step ------------------------------------------------------------------------------
    def forward(self, image_features, text_features, index=None, labels=None):
        check_pair_features(self.name, image_features, text_features)
        index = self._checked_index(index, image_features)
        S = similarity_matrix(image_features, text_features)
        last = last_occurrence(index)
        seen = self.seen[index]
        temperatures = self.anchor_temperatures(index)
        scores = self.negative_scores(S)
        steps = {side: self._anchor_step(scores[side], temperatures[side], index, seen, side)
                 for side in SIDES}
        loss = steps["I"].loss + steps["T"].loss
        global_loss = sum((temperatures[side] * steps[side].log_denominator
                           - scores[side].diagonal().detach()).mean() for side in SIDES)
        with torch.no_grad():
            for side, step in steps.items():
                getattr(self, f"u_{side}")[index] = step.u[last].to(self.u_I.dtype)
                getattr(self, f"b_{side}")[index] = step.b[last].to(self.b_I.dtype)
            self.seen[index] = True
        extra_loss, diagnostics = self.finish_step(S, index, last, steps, temperatures)
        if extra_loss is not None:
            loss = loss + extra_loss
        return {"loss": loss, "global_loss": global_loss.detach(), **diagnostics}

    def _checked_index(self, index, image_features) -> torch.Tensor:
        batch = image_features.shape[0]
        if index is None:
            raise ValueError(f"loss {self.name!r} keeps per-sample state: pass index=(B,) positions "
                             f"of the batch's samples in the training set (0..{self.num_samples - 1})")
        index = torch.as_tensor(index, device=image_features.device).long()
        if index.shape != (batch,):
            raise ValueError(f"loss {self.name!r}: index must have shape ({batch},) like the batch, "
                             f"got {tuple(index.shape)}")
        # one host sync, worth it: an index out of range is a device-side assert on CUDA
        if bool((index < 0).any() | (index >= self.num_samples).any()):
            raise ValueError(f"loss {self.name!r}: index holds values outside 0..{self.num_samples - 1}; "
                             f"build the loss with num_samples = the training-set size")
        return index

    def _anchor_step(self, scores, tau, index, seen, side) -> AnchorStep:
        """The moving-average update of one side. scores (B, B) row = anchor, tau (B,)."""
        batch = scores.shape[0]
        diagonal = torch.eye(batch, dtype=torch.bool, device=scores.device)
        logits = (scores.detach() / tau[:, None]).masked_fill(diagonal, float("-inf"))
        average = rebased_moving_average(getattr(self, f"u_{side}")[index], getattr(self, f"b_{side}")[index],
                                         seen, logits, self.gamma)
        w = average.E / (average.u[:, None] + self.eps)
        return AnchorStep(
            loss=(w * scores).sum(dim=1).mean() / (batch - 1),
            u=average.u, b=average.b,
            log_denominator=torch.log(average.u) + average.b,
            weighted_logit=(w * logits.masked_fill(diagonal, 0.0)).sum(dim=1) / (batch - 1),
        )

    def _seen_fraction(self) -> float:
        return float(self.seen.float().mean())


class SogCLRLoss(GlobalContrastiveLoss):
    """SogCLR's two-way global contrastive loss with one fixed temperature (see module docstring).

    Args:
        num_samples: N, the training-set size (sizes the per-sample state).
        gamma: moving-average weight of the newest estimate, in (0, 1]; 1 = mini-batch estimate.
        temperature: tau > 0, fixed.
        eps: added to u in the weights' denominator.

    forward(image_features (B, d), text_features (B, d), index (B,)) -> dict with
    "loss", "global_loss" and "temperature".
    """

    name = "sogclr"

    def __init__(self, num_samples: int, *, gamma: float, temperature: float, eps: float):
        super().__init__(num_samples, gamma, eps)
        self.temperature = float(temperature)

    def anchor_temperatures(self, index):
        tau = torch.full(index.shape, self.temperature, device=index.device)
        return {side: tau for side in SIDES}

    def finish_step(self, S, index, last, steps, temperatures):
        return None, {"temperature": torch.tensor(self.temperature, device=S.device)}

    def epoch_diagnostics(self) -> dict[str, float]:
        # the same keys as isogclr's, so a report can set sogclr's fixed tau beside their spread
        tau = self.temperature
        return {"tau_mean": tau, "tau_min": tau, "tau_max": tau, "seen_fraction": self._seen_fraction()}
