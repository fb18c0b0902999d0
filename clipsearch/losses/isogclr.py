"""`isogclr` and `isogclr_v2`: global contrastive losses with individualised temperatures.

Qiu et al., "Not All Semantics are Created Equal: Contrastive Self-supervised Learning with
Automatic Temperature Individualization", ICML 2023 (iSogCLR, its Eq. (5) and Algorithm 1).

Each anchor i has its own temperature tau_i, chosen by distributionally robust optimisation: the
objective per anchor is

    F_i(tau_i) = tau_i * log mean_{j != i} exp(h_ij / tau_i) + rho * tau_i

(rho: the KL budget; rho_I for image anchors, rho_T for text anchors). A step does SogCLR's update
(see `sogclr.py`) with A_ij = h_ij / tau_i, then moves tau_i along the estimated derivative

    G_i = log(u_i) + b_i + rho - sum_j w_ij A_ij / (B - 1)        (= dF_i / dtau_i)
    m_i <- (1 - beta) m_i + beta * clip(G_i, -5, 5)
    tau_i <- clip(tau_i - eta * m_i, tau_min, tau_max)

with u_i, b_i, w_ij those of the same step. The loss of the step uses the temperatures before
the update. Scaling: the same 1/(B - 1) as sogclr, so the three global losses share one scale.

eta and beta are real hyperparameters (a version of this method in circulation fixes them
internally, which leaves its temperatures all but still). A sample's temperature moves only when
the sample is in a batch, i.e. once per epoch: the default eta = 0.01 lets a temperature cross
the default range [0.005, 0.05] in a handful of visits.

`isogclr_v2` (the "iSogCLR_New_v2" variant) differs in two places:
  - the negatives contrast the raw similarity: A_ij = S_ij / tau_i and the loss term is
    mean_i sum_j w_ij S_ij / (B - 1);
  - a positive-pair DRO term with a scalar moving average:
        p_i = -2 S_ii / lambda,  b+ <- the log-scale of the step,  e_i = exp(p_i - b+)
        r <- (1 - gamma) r exp(b+_old - b+) + gamma mean(e)      (r = mean(e) the first time)
    (b+ is re-based at each step as sogclr's b is, see `rebased_moving_average`: the spec's running
    max would let r and e underflow together to 0 / 0 once p falls ~100 below its past max,
    possible for lambda < 0.04)
        L = L_neg + mean_i [-2 (e_i / r) S_ii]
  - G_i is not clipped.

State (registered buffers, sized by the training-set size N): SogCLR's u, b, seen, plus tau_I,
tau_T, m_I, m_T (N,), and for v2 the scalars r, b_pos, r_seen.
"""

from __future__ import annotations

import torch

from .sogclr import SIDES, GlobalContrastiveLoss, rebased_moving_average

#: |G_i| is clipped to this in isogclr (one noisy batch must not throw a temperature to a bound)
TEMPERATURE_GRADIENT_CLIP = 5.0


def temperature_range_problem(params: dict[str, float]) -> str | None:
    """Why tau_min, tau_max and tau_init do not fit together, or None (a registry check)."""
    tau_min, tau_max, tau_init = params["tau_min"], params["tau_max"], params["tau_init"]
    if not tau_min < tau_max:
        return f"tau_min={tau_min} must be < tau_max={tau_max}"
    if not tau_min <= tau_init <= tau_max:
        return f"tau_init={tau_init} must lie in [tau_min, tau_max] = [{tau_min}, {tau_max}]"
    return None


class ISogCLRLoss(GlobalContrastiveLoss):
    """iSogCLR: SogCLR with a per-sample temperature for each image and each text.

    Args:
        num_samples: N, the training-set size.
        gamma: moving-average weight of the newest estimate, in (0, 1].
        tau_init: the temperature every sample starts at.
        tau_min, tau_max: the range temperatures are clipped to.
        rho_I, rho_T: the DRO KL budget of image and text anchors (larger -> lower tau).
        eta: temperature step size.
        beta: weight of the newest G in the temperature momentum, in (0, 1].
        eps: added to u in the weights' denominator.

    forward(image_features (B, d), text_features (B, d), index (B,)) -> dict with "loss",
    "global_loss" and "tau_mean" (the mean temperature of the batch's anchors, both sides).
    """

    name = "isogclr"
    #: None: G is used unclipped (isogclr_v2)
    gradient_clip: float | None = TEMPERATURE_GRADIENT_CLIP

    def __init__(self, num_samples: int, *, gamma: float, tau_init: float, tau_min: float, tau_max: float,
                 rho_I: float, rho_T: float, eta: float, beta: float, eps: float):
        super().__init__(num_samples, gamma, eps)
        problem = temperature_range_problem({"tau_min": tau_min, "tau_max": tau_max, "tau_init": tau_init})
        if problem:
            raise ValueError(f"loss {self.name!r}: {problem}")
        self.tau_min, self.tau_max = float(tau_min), float(tau_max)
        self.rho = {"I": float(rho_I), "T": float(rho_T)}
        self.eta, self.beta = float(eta), float(beta)
        for side in SIDES:
            self.register_buffer(f"tau_{side}", torch.full((self.num_samples,), float(tau_init)))
            self.register_buffer(f"m_{side}", torch.zeros(self.num_samples))

    def anchor_temperatures(self, index):
        return {side: getattr(self, f"tau_{side}")[index] for side in SIDES}

    def finish_step(self, S, index, last, steps, temperatures):
        with torch.no_grad():
            for side in SIDES:
                self._temperature_step(side, index, last, steps[side], temperatures[side])
        batch_tau = torch.cat([temperatures[side] for side in SIDES])
        return None, {"tau_mean": batch_tau.mean().detach()}

    def _temperature_step(self, side, index, last, step, tau):
        """m and tau of one side, from G_i = dF_i/dtau_i estimated by this step's u, b, w."""
        gradient = step.log_denominator + self.rho[side] - step.weighted_logit
        if self.gradient_clip is not None:
            gradient = gradient.clamp(-self.gradient_clip, self.gradient_clip)
        momentum_buffer = getattr(self, f"m_{side}")
        momentum = (1.0 - self.beta) * momentum_buffer[index] + self.beta * gradient
        new_tau = (tau - self.eta * momentum).clamp(self.tau_min, self.tau_max)
        momentum_buffer[index] = momentum[last].to(momentum_buffer.dtype)
        getattr(self, f"tau_{side}")[index] = new_tau[last].to(momentum_buffer.dtype)

    def epoch_diagnostics(self) -> dict[str, float]:
        """Temperature mean, min and max over the samples seen so far (both sides pooled)."""
        seen = self.seen
        out = {"seen_fraction": self._seen_fraction()}
        if not bool(seen.any()):
            return out
        per_side = {side: getattr(self, f"tau_{side}")[seen] for side in SIDES}
        pooled = torch.cat(list(per_side.values()))
        out.update(tau_mean=float(pooled.mean()), tau_min=float(pooled.min()), tau_max=float(pooled.max()))
        out.update({f"tau_{side}_mean": float(tau.mean()) for side, tau in per_side.items()})
        return out


class ISogCLRV2Loss(ISogCLRLoss):
    """isogclr_v2: raw-similarity negatives, a positive-pair DRO term, unclipped G.

    Args as `ISogCLRLoss` (defaults tau_init 0.07, range [0.005, 1.0], rho 6.0), plus
        lambda_: the positive term's temperature-like scale, > 0 (`lambda` is a Python keyword).
    """

    name = "isogclr_v2"
    gradient_clip = None

    def __init__(self, num_samples: int, *, gamma: float, tau_init: float, tau_min: float, tau_max: float,
                 rho_I: float, rho_T: float, eta: float, beta: float, lambda_: float, eps: float):
        super().__init__(num_samples, gamma=gamma, tau_init=tau_init, tau_min=tau_min, tau_max=tau_max,
                         rho_I=rho_I, rho_T=rho_T, eta=eta, beta=beta, eps=eps)
        self.lambda_ = float(lambda_)
        self.register_buffer("r", torch.zeros(()))
        self.register_buffer("b_pos", torch.zeros(()))
        self.register_buffer("r_seen", torch.zeros((), dtype=torch.bool))

    def negative_scores(self, S):
        return {"I": S, "T": S.T}

    def finish_step(self, S, index, last, steps, temperatures):
        _, diagnostics = super().finish_step(S, index, last, steps, temperatures)
        return self._positive_term(S.diagonal()), diagnostics

    def _positive_term(self, positive: torch.Tensor) -> torch.Tensor:
        """mean_i -2 (e_i / r) S_ii, updating the scalar moving average r (held as r exp(b_pos))."""
        p = -2.0 * positive.detach() / self.lambda_
        # the same re-based update as u: r lies in [1, 2], so e / r cannot underflow to 0 / 0
        average = rebased_moving_average(self.r, self.b_pos, self.r_seen, p, self.gamma)
        with torch.no_grad():
            self.r.copy_(average.u)
            self.b_pos.copy_(average.b)
            self.r_seen.fill_(True)
        return (-2.0 * (average.E / average.u) * positive).mean()
