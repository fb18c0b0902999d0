"""Hyperparameter importance of a phase by two methods, through Optuna: fANOVA (Hutter et al.,
ICML 2014: the variance of a random forest's predictions each parameter explains) and
PED-ANOVA (Watanabe et al., IJCAI 2023: how much the top trials' distribution of a parameter
departs from all trials'; the conditional variant handles parameters set only by some trials).

Optuna's evaluators read a study, so the trials are put in an in-memory study with
`optuna.trial.create_trial`, one distribution per parameter: the search space's where the
phase's Optuna study recorded it, else inferred from the values (data.param_kinds). The value
of a trial is its score at a common epoch (data.common_epoch): a trial ASHA stopped early is
compared with the others at an epoch they all reached.

`importance_report` returns what importance.json holds; every method that could not run says
why, and so does the report as a whole.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from .data import LOSS, OPTIMIZER, History, ParamKind, Row, Unavailable, common_epoch, optimizer_loss_share
from .study import COMPLETE, StudyTrial, param_value
from .study import build_study as make_study

MIN_TRIALS = 4
#: PED-ANOVA compares the top trials with all; Optuna advises at least 5 on top
_MIN_TOP = 5
METHODS = {
    "fanova": "optuna.importance.FanovaImportanceEvaluator",
    "ped_anova": "optuna.importance.PedAnovaImportanceEvaluator",
}
TARGET = "the best {metric} over epochs 1..{epoch} (each trial's score had it stopped at epoch {epoch})"


def importance_report(rows: list[Row], histories: dict[str, History], metric: str,
                      kinds: dict[str, ParamKind], constant: dict[str, str], seed: int = 0,
                      kinds_from: str = "the trials' values", mode: str = "max") -> dict[str, Any]:
    """importance.json's content: per method the normalised importances (summing to 1), the
    optimizer-vs-loss share, the common epoch and the trials used; `reason` when none could be
    computed. `mode`: the metric's direction (PED-ANOVA's top trials are the best in it)."""
    out: dict[str, Any] = {
        "metric": metric, "mode": mode, "common_epoch": None, "target": None, "trials_used": 0, "trial_ids": [],
        "parameters": {k: v.kind for k, v in kinds.items()}, "distributions_from": kinds_from,
        "skipped_parameters": dict(constant), "methods": {}, "optimizer_vs_loss": {}, "note": None, "reason": None}
    unerrored = {str(r["trial_id"]) for r in rows if r.get("status") != "ERROR"}
    usable = {t: h for t, h in histories.items() if t in unerrored}
    try:
        if not kinds:
            raise Unavailable("no hyperparameter varies across the trials")
        common = common_epoch(usable, metric, MIN_TRIALS, mode=mode)
    except Unavailable as why:
        out["reason"] = str(why)
        return out
    configs = {str(r["trial_id"]): r["config"] for r in rows}
    out.update(common_epoch=common.epoch, target=TARGET.format(metric=metric, epoch=common.epoch),
               trials_used=len(common.values), trial_ids=sorted(common.values),
               note=f"errored trials are left out, as the ranking leaves them out; {common.candidates} trials "
                    f"had a value, an epoch needed {common.needed}")
    study = build_study({t: configs[t] for t in common.values}, common.values, kinds, mode)
    fixed = [f"{k} {constant[k]}" for k in (OPTIMIZER, LOSS) if k in constant]
    for method in METHODS:
        out["methods"][method] = evaluate(study, method, kinds, seed)
        out["optimizer_vs_loss"][method] = {"reason": "; ".join(fixed)} if fixed else _share(out["methods"][method])
    return out


def _share(result: dict[str, Any]) -> dict[str, Any]:
    if result["importances"] is None:
        return {"reason": result["reason"]}
    try:
        return optimizer_loss_share(result["importances"])
    except Unavailable as why:
        return {"reason": str(why)}


# ------------------------------------------------------------------------------ the study

def build_study(configs: dict[str, dict[str, Any]], values: dict[str, float], kinds: dict[str, ParamKind],
                mode: str = "max"):
    """An in-memory study in `mode`'s direction with one complete trial per trial id; a trial
    that did not set a conditional parameter has no value for it."""
    trials = [StudyTrial(trial_id, COMPLETE, value,
                         {k: param_value(kinds[k], v) for k, v in configs[trial_id].items()
                          if k in kinds and v is not None}, {}, None, None)
              for trial_id, value in values.items()]
    return make_study(trials, kinds, mode)


# ------------------------------------------------------------------------------ the evaluators

def evaluator(method: str, n_trials: int, seed: int):
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if method == "fanova":
        return FanovaImportanceEvaluator(seed=seed)
    # Optuna's default top 10% is a single trial in a small phase: a density of one point
    return PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, _MIN_TOP / n_trials)))


def evaluate(study, method: str, kinds: dict[str, ParamKind], seed: int) -> dict[str, Any]:
    """One method's normalised importances, the parameters it could not evaluate (fANOVA
    takes only those every trial set) and the warnings Optuna gave."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    result = {"evaluator": METHODS[method], "importances": None, "not_evaluated": {}, "warnings": [],
              "reason": None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            found = optuna.importance.get_param_importances(
                study, evaluator=evaluator(method, len(trials), seed), normalize=True)
        except (ValueError, RuntimeError) as exc:  # Optuna's way of saying the study will not do
            result["reason"] = f"{method} failed: {exc}"
            found = None
    result["warnings"] = sorted({str(w.message) for w in caught})
    if found is not None:
        result["importances"] = {k: _clean(v) for k, v in found.items()}
        result["not_evaluated"] = {k: _why_not(k, trials, method) for k in kinds if k not in found}
    return result


def _clean(value: float) -> float:
    return float(value) if math.isfinite(value) else 0.0


def _why_not(name: str, trials, method: str) -> str:
    set_in = sum(name in t.params for t in trials)
    if not set_in:
        return f"set by none of the {len(trials)} trials compared"
    return (f"conditional (set in {set_in} of {len(trials)} trials): {method} evaluates only the parameters "
            f"every trial set")
