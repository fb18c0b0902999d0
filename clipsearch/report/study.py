"""A phase's trials as an in-memory Optuna study, for optuna.visualization's slice, contour and
timeline plots (which take a study) and for importance's evaluators.

The phase's own optuna.db is never opened with Optuna (that could migrate the schema of a file
a resumed phase still writes), and a grid phase has none: the study is built from trials.csv
and history/, one distribution per parameter (the search space's where optuna.db recorded it,
else inferred from the values: data.param_kinds, data.with_declared). A trial that ran its
course is COMPLETE with its score as value; one ASHA stopped is PRUNED (its per-epoch values as
intermediate values, no value: Optuna's slice and contour plot complete trials only, so every
point there comes from the same number of epochs); an errored one is FAIL. Start and end times
come from history/.

`study_trials` (pure) says what goes in; `build_study` puts it in Optuna.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from typing import Any

from .data import History, ParamKind, Row, Unavailable, scored_trials, trial_span

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"
LR, WD = "optimizer.lr", "optimizer.weight_decay"


@dataclass(frozen=True)
class StudyTrial:
    trial_id: str
    state: str                          # COMPLETE, PRUNED or FAIL
    value: float | None                 # the score, for a COMPLETE trial
    params: dict[str, Any]              # the varying parameters the trial set
    intermediate: dict[int, float]      # the metric per epoch (history/)
    started: float | None               # Unix seconds (history/), None without a record
    ended: float | None


def study_trials(rows: list[Row], histories: dict[str, History], kinds: dict[str, ParamKind], metric: str,
                 order: list[str]) -> list[StudyTrial]:
    """One StudyTrial per row of trials.csv, in `order` (the order they started), then the rest."""
    scores = {p.trial_id: p.score for p in scored_trials(rows, metric)}
    by_id = {str(r["trial_id"]): r for r in rows}
    trials = []
    for trial_id in [t for t in order if t in by_id] + [t for t in by_id if t not in order]:
        row, history = by_id[trial_id], histories.get(trial_id, [])
        state = (FAIL if row.get("status") == "ERROR" or trial_id not in scores
                 else PRUNED if row.get("stopped_early") else COMPLETE)
        span = trial_span(history)
        trials.append(StudyTrial(
            trial_id, state, scores[trial_id] if state == COMPLETE else None,
            {k: param_value(kinds[k], v) for k, v in row["config"].items() if k in kinds and v is not None},
            {int(e["epoch"]): float(e[metric]) for e in history if isinstance(e.get(metric), (int, float))},
            *(span or (None, None))))
    return trials


# ------------------------------------------------------------------------------ what each plot can show

def slice_params(trials: list[StudyTrial], kinds: dict[str, ParamKind]) -> list[str]:
    """The parameters the slice plot shows: those that vary among the complete trials."""
    complete = _complete(trials, "the slice plot")
    shown = [k for k in kinds if len({repr(t.params[k]) for t in complete if k in t.params}) >= 2]
    if not shown:
        raise Unavailable(f"no parameter varies among the {len(complete)} trials that ran every epoch")
    return shown


@dataclass(frozen=True)
class ContourChoice:
    x: str
    y: str
    why: str            # how the two were chosen, for the caption


def contour_params(trials: list[StudyTrial], kinds: dict[str, ParamKind],
                   importances: dict[str, float] | None) -> ContourChoice:
    """optimizer.lr x optimizer.weight_decay when both were searched, else the two numeric
    parameters with the highest importance (in the order of `kinds` without importances);
    each must take two values or more among the complete trials."""
    complete = _complete(trials, "the contour plot")
    numeric = [k for k, kind in kinds.items() if kind.kind != "categorical"
               and len({t.params[k] for t in complete if k in t.params}) >= 2]
    if LR in numeric and WD in numeric:
        return ContourChoice(LR, WD, "the learning rate and weight decay, both searched")
    if len(numeric) < 2:
        raise Unavailable(f"{len(numeric)} numeric parameter(s) take two values or more among the trials that "
                          f"ran every epoch; a contour needs 2")
    if importances:
        x, y = sorted(numeric, key=lambda k: -importances.get(k, -1.0))[:2]
        return ContourChoice(x, y, "the two numeric parameters with the highest fANOVA importance")
    return ContourChoice(numeric[0], numeric[1], "the first two numeric parameters (no importance was computed)")


def timed(trials: list[StudyTrial]) -> list[StudyTrial]:
    """The trials the timeline can place: those history/ gave a start and an end."""
    out = [t for t in trials if t.started is not None]
    if not out:
        raise Unavailable("no trial has a start time (no per-epoch records in history/)")
    return out


def _complete(trials: list[StudyTrial], plot: str) -> list[StudyTrial]:
    complete = [t for t in trials if t.state == COMPLETE]
    if len(complete) < 2:
        raise Unavailable(f"{len(complete)} trial(s) ran every epoch; {plot} needs 2 (trials ASHA stopped "
                          f"are left out: their scores come from fewer epochs)")
    return complete


# ------------------------------------------------------------------------------ Optuna

def distribution(kind: ParamKind):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if kind.kind == "categorical":
        return CategoricalDistribution(kind.choices)
    if kind.kind == "int":
        return IntDistribution(int(kind.low), int(kind.high))
    return FloatDistribution(kind.low, kind.high, log=kind.kind == "log")


def param_value(kind: ParamKind, value: Any) -> Any:
    """A config value as the parameter's distribution holds it."""
    if kind.kind == "categorical":
        return value if isinstance(value, (str, int, float, bool)) else repr(value)
    return int(value) if kind.kind == "int" else float(value)


def build_study(trials: list[StudyTrial], kinds: dict[str, ParamKind], mode: str = "max"):
    """An in-memory study holding `trials`, numbered in their order, in `mode`'s direction
    (PED-ANOVA's top trials and the plots' best are the study's)."""
    import optuna

    dists = {name: distribution(kind) for name, kind in kinds.items()}
    with quiet_optuna():
        study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for t in trials:
        frozen = optuna.trial.create_trial(
            state=optuna.trial.TrialState[t.state], value=t.value, params=t.params,
            distributions={k: dists[k] for k in t.params}, intermediate_values=t.intermediate,
            user_attrs={"trial_id": t.trial_id})
        if t.started is not None:  # create_trial stamps both with now
            frozen.datetime_start = datetime.datetime.fromtimestamp(t.started)
            frozen.datetime_complete = datetime.datetime.fromtimestamp(t.ended)
        study.add_trial(frozen)
    return study


@contextlib.contextmanager
def quiet_optuna():
    """Optuna logs every study it creates at INFO, and warns of what the report already notes."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)
