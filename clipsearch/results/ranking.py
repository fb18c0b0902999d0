"""Which trials are best, and what each phase hands to the next. Pure functions, no Ray.

The rule, used for best.json, for phase 2's picks and for phase 3's start:

    Trials are compared only by values measured at the same epoch. A trial's *reach* is the
    last epoch it reported; its *score* is the best value of the metric over epochs 1..reach
    (a trial keeps its best epoch, as phase 3 needs). Trials are ranked by reach first, then
    by score. Errored trials, and trials that reported nothing, are not ranked.

"Best" follows the space's `mode`: the highest value for `max` (the default: objective,
recalls, accuracies), the lowest for `min` (a loss such as train_loss).

Why reach first: under ASHA a trial only reaches a later rung by being among the best of the
rung below at the same epoch, and the trials stopped at a rung are compared there with each
other; so an early-stopped trial never wins on a low-epoch value (which ASHA hands the
searcher as if it were a finished trial's), and no value is ever compared with one from
another epoch. Without early stopping (phases 2 and 3) every trial reaches train.epochs and
the rule is simply "best epoch wins".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

RULE = ("trials are ranked by the last epoch they reached, then by the best metric over those "
        "epochs; only values at the same epoch are compared; errored trials are not ranked")
#: the directions a metric can be optimised in (Tune's and the space file's words)
MODES = ("max", "min")


def best_of(values, mode: str = "max", key=None):
    """The best of `values` in `mode`'s direction (max or min; the first one on ties)."""
    return (min if mode == "min" else max)(values, key=key)


def better(value: float, than: float, mode: str = "max") -> bool:
    """Whether `value` is strictly better than `than` in `mode`'s direction."""
    return value < than if mode == "min" else value > than


def best_first(mode: str = "max") -> int:
    """The sign that sorts values best first in `mode`'s direction (a sort key's multiplier)."""
    return 1 if mode == "min" else -1


def worst_value(mode: str = "max") -> float:
    """What a trial without a finite value scores: below (max) or above (min) every real one."""
    return math.inf if mode == "min" else -math.inf


@dataclass
class TrialRecord:
    """One trial as the driver saw it: config, per-epoch metrics, outcome."""

    trial_id: str
    status: str                                   # TERMINATED, ERROR (RUNNING/PENDING if cut off)
    config: dict[str, Any]                        # the trial's flat config (what the phase set)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per reported epoch
    seconds: float = 0.0
    num_failures: int = 0
    error: str = ""
    checkpoint: str | None = None                 # the trial's latest Tune checkpoint (a folder or URI)

    @property
    def reach(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0

    def score(self, metric: str, mode: str = "max") -> float:
        """The best value of `metric` over the trial's epochs (mode max: the highest, min: the lowest)."""
        values = [row[metric] for row in self.history if _finite(row.get(metric))]
        return best_of(values, mode) if values else worst_value(mode)

    def best_row(self, metric: str, mode: str = "max") -> dict[str, Any]:
        """The reported metrics of the trial's best epoch (the first one on ties)."""
        rows = [row for row in self.history if _finite(row.get(metric))]
        return best_of(rows, mode, key=lambda row: row[metric]) if rows else {}

    @property
    def rankable(self) -> bool:
        return self.status != "ERROR" and bool(self.history)


@dataclass(frozen=True)
class Ranked:
    record: TrialRecord
    rank: int          # 1 = best
    reach: int         # the epoch it was compared at
    score: float


def rank_trials(records: list[TrialRecord], metric: str, mode: str = "max") -> list[Ranked]:
    """Rankable trials, best first, by (reach, score in `mode`'s direction); ties keep the
    trials' order."""
    sign = best_first(mode)
    order = sorted((r for r in records if r.rankable), key=lambda r: (-r.reach, sign * r.score(metric, mode)))
    return [Ranked(r, i + 1, r.reach, r.score(metric, mode)) for i, r in enumerate(order)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------ phase 1 -> 2
# Phase 2 carries only what phase 1 decided (its searched keys), never its set-up constants
# (epochs, data fraction): those are each phase's own.

def section_values(config: dict[str, Any], section: str, searched: set[str]) -> dict[str, Any]:
    """The searched keys of one config section, plus its name, from a flat config."""
    return {k: v for k, v in config.items()
            if k.split(".", 1)[0] == section and (k in searched or k == f"{section}.name")}


def top_optimizers(ranked: list[dict[str, Any]], k: int) -> list[tuple[str, dict[str, Any]]]:
    """The k best distinct optimizers of a ranked phase, each with the config of its best trial.

    ranked: trials best first, each a dict with "config" (flat). An optimizer is as good as its
    best trial.
    """
    picks: dict[str, dict[str, Any]] = {}
    for trial in ranked:
        name = trial["config"].get("optimizer.name")
        if name is not None and name not in picks:
            picks[name] = trial["config"]
        if len(picks) == k:
            break
    return list(picks.items())


def best_with(ranked: list[dict[str, Any]], key: str, value: Any) -> dict[str, Any] | None:
    """The config of the best trial whose `key` was `value`, or None."""
    return next((t["config"] for t in ranked if t["config"].get(key) == value), None)


def phase2_axes(ranked: list[dict[str, Any]], k: int, losses: list[str], searched: set[str]) -> dict[str, list[dict]]:
    """Phase 2's two grid axes from phase 1's ranked trials; the grid is their product.

    "optimizer": the top k optimizers, each with the optimizer.* values of its best trial;
    "loss": every loss of `losses`, each with the loss.* values of the best phase 1 trial that
    ran it (just the name when phase 1 never ran it).
    """
    optimizers = [section_values(cfg, "optimizer", searched) for _, cfg in top_optimizers(ranked, k)]
    loss_cells = []
    for loss in losses:
        cfg = best_with(ranked, "loss.name", loss)
        loss_cells.append(section_values(cfg, "loss", searched) if cfg else {"loss.name": loss})
    return {"optimizer": optimizers, "loss": loss_cells}


def carried_from_best(ranked: list[dict[str, Any]], searched: set[str]) -> dict[str, Any]:
    """The best trial's searched values outside the loss and optimizer sections (a schedule,
    embed_dim, ...): phase 2 keeps them."""
    if not ranked:
        return {}
    return {k: v for k, v in ranked[0]["config"].items()
            if k in searched and k.split(".", 1)[0] not in ("loss", "optimizer")}
