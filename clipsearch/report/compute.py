"""What a phase spent, and the best it had found for what it spent. Pure: no plotly, no files.

Epochs are counted as bench search counts them (clipsearch.bench.search): a trial's epochs x
its data.fraction, so that an epoch on 20% of the training pairs is a fifth of one ("epochs over
all pairs"); trial-epochs are the plain sum of the epochs the trials reached. Trial-seconds are
the trials' wall time (trials.csv `seconds`); GPU-seconds are trial-seconds x the GPUs each trial
held (phase.json `resources.gpu`: 0 when the trials ran on CPU). Errored trials count: they
spent their compute all the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .data import History, Row, TrialPoint, Unavailable, ahead, scored_trials

FRACTION = "data.fraction"
#: the config's own default (clipsearch.config), for a phase that never set data.fraction
DEFAULT_FRACTION = 1.0


@dataclass(frozen=True)
class ComputeSpent:
    trials: int
    epochs: float                   # over all pairs: each trial's epochs x its data.fraction
    trial_epochs: int               # the epochs the trials reached, summed
    trial_seconds: float            # trials.csv's `seconds`, summed
    train_seconds: float | None     # the epochs' training time the trials reported (history/); None: not reported
    eval_seconds: float | None
    gpus_per_trial: float | None    # phase.json's resources.gpu; None: phase.json names no resources

    @property
    def gpu_seconds(self) -> float | None:
        return None if self.gpus_per_trial is None else self.trial_seconds * self.gpus_per_trial


def phase_fraction(state: dict[str, Any]) -> float:
    """The data.fraction of a trial whose config does not hold it: the phase's constant, else
    its base config's (phase.json), else the config's default."""
    if FRACTION in (state.get("constants") or {}):
        return float(state["constants"][FRACTION])
    base = ((state.get("base") or {}).get("raw") or {}).get("data") or {}
    return float(base.get("fraction", DEFAULT_FRACTION))


def gpus_per_trial(state: dict[str, Any]) -> float | None:
    resources = state.get("resources")
    if not isinstance(resources, dict):
        return None
    return float(resources.get("gpu") or 0.0)


def trial_cost(row: Row, fraction: float = DEFAULT_FRACTION) -> float:
    """A trial's epochs over all pairs: the epochs it reached x its data.fraction."""
    return (row.get("epochs") or 0) * float(row["config"].get(FRACTION, fraction))


def compute_spent(rows: list[Row], histories: dict[str, History], gpus: float | None,
                  fraction: float = DEFAULT_FRACTION) -> ComputeSpent:
    ids = {str(r["trial_id"]) for r in rows}
    reported = [epoch for trial_id, history in histories.items() if trial_id in ids for epoch in history]
    return ComputeSpent(
        trials=len(rows), epochs=sum(trial_cost(r, fraction) for r in rows),
        trial_epochs=sum(r.get("epochs") or 0 for r in rows),
        trial_seconds=sum(float(r.get("seconds") or 0.0) for r in rows),
        train_seconds=_total(reported, "train_seconds"), eval_seconds=_total(reported, "eval_seconds"),
        gpus_per_trial=gpus)


def _total(epochs: list[dict], key: str) -> float | None:
    values = [float(e[key]) for e in epochs if isinstance(e.get(key), (int, float))]
    return sum(values) if values else None


# ------------------------------------------------------------------------------ best against compute

@dataclass(frozen=True)
class ComputeStep:
    """The phase just after one trial ended: what had been spent, and the best trial so far."""

    trial_id: str
    epochs: float                 # cumulative, over all pairs
    seconds: float                # cumulative trial-seconds
    best: TrialPoint | None       # by the ranking rule (reach, then score); None before any score


@dataclass(frozen=True)
class ComputeCurve:
    name: str
    steps: tuple[ComputeStep, ...]

    @property
    def scored(self) -> tuple[ComputeStep, ...]:
        return tuple(s for s in self.steps if s.best is not None)


def best_vs_compute(rows: list[Row], metric: str, order: list[str], name: str = "",
                    fraction: float = DEFAULT_FRACTION, mode: str = "max") -> ComputeCurve:
    """The best trial so far after each trial's compute is added, trials taken in `order` (the
    order they finished; those it lacks at the end, in trials.csv's order). "Best" follows the
    ranking rule (in `mode`'s direction), as the progression figure's does, so it can fall when a
    trial that trained longer overtakes one ASHA stopped early."""
    points = {p.trial_id: p for p in scored_trials(rows, metric)}
    by_id = {str(r["trial_id"]): r for r in rows}
    ordered = [t for t in order if t in by_id] + [t for t in by_id if t not in order]
    epochs = seconds = 0.0
    best: TrialPoint | None = None
    steps = []
    for trial_id in ordered:
        epochs += trial_cost(by_id[trial_id], fraction)
        seconds += float(by_id[trial_id].get("seconds") or 0.0)
        point = points.get(trial_id)
        if point is not None and ahead(point, best, mode):
            best = point
        steps.append(ComputeStep(trial_id, epochs, seconds, best))
    if best is None:
        raise Unavailable("no trial has a score")
    return ComputeCurve(name, tuple(steps))


def stacked(curves: list[ComputeCurve]) -> list[ComputeCurve]:
    """The phases one after another: each curve shifted by what the phases before it spent, so
    that the x axis is the experiment's compute."""
    out, epochs, seconds = [], 0.0, 0.0
    for curve in curves:
        out.append(ComputeCurve(curve.name, tuple(replace(s, epochs=s.epochs + epochs, seconds=s.seconds + seconds)
                                                  for s in curve.steps)))
        if curve.steps:
            epochs, seconds = epochs + curve.steps[-1].epochs, seconds + curve.steps[-1].seconds
    return out
