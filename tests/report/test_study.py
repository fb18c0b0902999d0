"""The phase's trials as an Optuna study, and what the slice, contour and timeline plots can show."""

import datetime

import optuna
import pytest

from clipsearch.report import study as S
from clipsearch.report.data import ParamKind, Unavailable, param_kinds

from .conftest import STARTED, hand_rows

TIMES = {t: [{"epoch": e + 1, "objective": 1.0 + e, "timestamp": 1000.0 + 100 * k + 10 * (e + 1),
              "time_total_s": 10.0 * (e + 1)} for e in range(2)] for k, t in enumerate(STARTED)}


def hand_trials(histories=None):
    rows = hand_rows()
    kinds, _ = param_kinds(r["config"] for r in rows)
    return S.study_trials(rows, TIMES if histories is None else histories, kinds, "objective", STARTED), kinds


def test_study_trials_are_complete_pruned_or_failed_in_start_order():
    trials, _ = hand_trials()
    assert [(t.trial_id, t.state, t.value) for t in trials] == [
        ("t3", "PRUNED", None), ("t4", "PRUNED", None), ("t2", "COMPLETE", 3.5), ("t1", "COMPLETE", 4),
        ("t5", "COMPLETE", 2), ("t6", "FAIL", None)]
    t3 = trials[0]
    assert (t3.started, t3.ended, t3.intermediate) == (1000.0, 1020.0, {1: 1.0, 2: 2.0})
    assert "optimizer.momentum" not in trials[3].params and trials[4].params["optimizer.momentum"] == 0.9


def test_the_study_holds_each_trial_with_its_state_value_and_times():
    trials, kinds = hand_trials()
    study = S.build_study(trials, kinds)
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED", "COMPLETE", "COMPLETE", "COMPLETE", "FAIL"]
    assert [t.user_attrs["trial_id"] for t in study.trials] == STARTED
    assert study.best_trial.user_attrs["trial_id"] == "t1"
    assert study.trials[0].datetime_start == datetime.datetime.fromtimestamp(1000.0)
    assert isinstance(study.trials[2].distributions["optimizer.lr"], optuna.distributions.FloatDistribution)


def test_under_mode_min_the_study_minimises_and_its_best_is_the_lowest():
    rows = hand_rows("min")
    kinds, _ = param_kinds(r["config"] for r in rows)
    study = S.build_study(S.study_trials(rows, TIMES, kinds, "objective", STARTED), kinds, "min")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.best_trial.user_attrs["trial_id"] == "t5"  # complete: t2 2, t1 1, t5 0.5


def test_slice_shows_what_varies_among_complete_trials():
    trials, kinds = hand_trials()
    # complete: t2, t1, t5; momentum is set by t5 alone
    assert S.slice_params(trials, kinds) == ["loss.name", "optimizer.name", "optimizer.lr",
                                             "optimizer.weight_decay"]
    with pytest.raises(Unavailable, match=r"1 trial\(s\) ran every epoch; the slice plot needs 2"):
        S.slice_params([t for t in trials if t.trial_id != "t1" and t.trial_id != "t2"], kinds)


def test_contour_takes_lr_and_weight_decay_when_both_were_searched():
    trials, kinds = hand_trials()
    choice = S.contour_params(trials, kinds, {"optimizer.momentum": 0.9, "optimizer.lr": 0.05})
    assert (choice.x, choice.y) == ("optimizer.lr", "optimizer.weight_decay")


def test_contour_otherwise_takes_the_two_most_important_numeric_parameters():
    kinds = {"a": ParamKind("a", "float", low=0, high=1), "b": ParamKind("b", "float", low=0, high=1),
             "c": ParamKind("c", "int", low=1, high=3), "name": ParamKind("name", "categorical", ("x", "y"))}
    trials = [S.StudyTrial(f"t{i}", S.COMPLETE, float(i), {"a": i / 4, "b": 1 - i / 4, "c": i % 3 + 1, "name": "x"},
                           {}, None, None) for i in range(4)]
    choice = S.contour_params(trials, kinds, {"name": 0.5, "c": 0.3, "b": 0.15, "a": 0.05})
    assert (choice.x, choice.y) == ("c", "b") and "fANOVA" in choice.why
    assert (S.contour_params(trials, kinds, None).x, S.contour_params(trials, kinds, None).y) == ("a", "b")
    with pytest.raises(Unavailable, match=r"1 numeric parameter\(s\) take two values or more"):
        S.contour_params(trials, {"a": kinds["a"], "name": kinds["name"]}, None)


def test_timeline_needs_a_trial_with_a_start_time():
    trials, _ = hand_trials()
    assert len(S.timed(trials)) == 6
    untimed, _ = hand_trials(histories={})
    with pytest.raises(Unavailable, match="no trial has a start time"):
        S.timed(untimed)
