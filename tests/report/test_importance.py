"""Importance through Optuna on trials whose answer is known, and what it says when it cannot."""

import numpy as np
import optuna
import pytest

from clipsearch.report.data import param_kinds
from clipsearch.report.importance import METHODS, build_study, importance_report
from clipsearch.report.study import distribution

from .conftest import hand_histories, hand_rows


def synthetic(n: int = 40, seed: int = 0):
    """lr drives the objective (5 per decade); `ignored` and the optimizer do not."""
    rng = np.random.default_rng(seed)
    rows, histories = [], {}
    for i in range(n):
        config = {"optimizer.lr": float(10 ** rng.uniform(-5, -2)), "ignored": float(rng.uniform(0.5, 1.0)),
                  "optimizer.name": ["adam", "sgd"][i % 2], "loss.name": "clip", "seed": 0}
        value = 5 * (np.log10(config["optimizer.lr"]) + 5) + rng.normal(0, 0.1)
        rows.append({"trial_id": f"t{i}", "status": "TERMINATED", "config": config})
        histories[f"t{i}"] = [{"epoch": 1, "objective": float(value)}]
    return rows, histories


def report_of(rows, histories):
    kinds, constant = param_kinds(r["config"] for r in rows)
    return importance_report(rows, histories, "objective", kinds, constant)


@pytest.mark.parametrize("method", list(METHODS))
def test_the_parameter_that_drives_the_objective_is_the_most_important(method):
    imp = report_of(*synthetic())["methods"][method]["importances"]
    assert max(imp, key=imp.get) == "optimizer.lr"
    assert imp["optimizer.lr"] > 0.8
    assert imp["ignored"] < 0.1 and imp["optimizer.name"] < 0.1
    assert sum(imp.values()) == pytest.approx(1.0)


def test_report_names_epoch_trials_and_the_parameters_it_skipped():
    report = report_of(*synthetic())
    assert (report["common_epoch"], report["trials_used"], report["reason"]) == (1, 40, None)
    assert report["parameters"] == {"optimizer.name": "categorical", "ignored": "float", "optimizer.lr": "log"}
    assert report["skipped_parameters"] == {"loss.name": "never varies (always 'clip')",
                                            "seed": "never varies (always 0)"}
    # the loss never varies: no optimizer-vs-loss share, and the reason says so
    assert report["optimizer_vs_loss"]["fanova"] == {"reason": "loss.name never varies (always 'clip')"}


def test_importance_compares_trials_at_the_common_epoch_without_errored_ones():
    report = report_of(hand_rows(), hand_histories())
    assert report["common_epoch"] == 2
    assert report["trial_ids"] == ["t1", "t2", "t4", "t5"]
    for method in METHODS:
        share = report["optimizer_vs_loss"][method]
        assert set(share) == {"optimizer.name", "loss.name"} and sum(share.values()) == pytest.approx(1.0)


def test_fanova_leaves_out_a_conditional_parameter_and_says_why():
    report = report_of(hand_rows(), hand_histories())
    # of the 4 compared trials only t5 set a momentum
    assert "optimizer.momentum" in report["methods"]["fanova"]["not_evaluated"]
    assert "set in 1 of 4 trials" in report["methods"]["fanova"]["not_evaluated"]["optimizer.momentum"]
    assert "optimizer.momentum" in report["methods"]["ped_anova"]["importances"]


def test_too_few_trials_give_a_reason_instead_of_importances():
    rows, histories = synthetic(n=3)
    report = report_of(rows, histories)
    assert report["methods"] == {} and report["common_epoch"] is None
    assert "importance needs at least 4" in report["reason"]


def test_nothing_varies_gives_a_reason():
    rows = [{"trial_id": f"t{i}", "status": "TERMINATED", "config": {"seed": 0}} for i in range(5)]
    histories = {f"t{i}": [{"epoch": 1, "objective": float(i)}] for i in range(5)}
    assert report_of(rows, histories)["reason"] == "no hyperparameter varies across the trials"


def test_study_holds_one_trial_per_value_with_inferred_distributions():
    rows, histories = synthetic(n=6)
    kinds, _ = param_kinds(r["config"] for r in rows)
    values = {t: h[0]["objective"] for t, h in histories.items()}
    study = build_study({r["trial_id"]: r["config"] for r in rows}, values, kinds)
    assert [t.value for t in study.trials] == list(values.values())
    dists = study.trials[0].distributions
    assert dists["optimizer.lr"].log
    assert isinstance(dists["optimizer.name"], optuna.distributions.CategoricalDistribution)
    assert "seed" not in dists
    assert distribution(kinds["ignored"]) == optuna.distributions.FloatDistribution(kinds["ignored"].low,
                                                                                   kinds["ignored"].high)


def two_ended(n: int = 60, seed: int = 0):
    """A loss whose lowest values all come from a < 0.15 and whose highest from a large b: which
    parameter PED-ANOVA finds depends on which end is the top."""
    rng = np.random.default_rng(seed)
    rows, histories = [], {}
    for i in range(n):
        a, b = float(rng.uniform()), float(rng.uniform())
        value = 0.0 + 0.01 * b if a < 0.15 else 1.0 + b
        rows.append({"trial_id": f"t{i}", "status": "TERMINATED", "config": {"a": a, "b": b}})
        histories[f"t{i}"] = [{"epoch": 1, "loss": value}]
    return rows, histories


@pytest.mark.parametrize("mode, top", [("min", "a"), ("max", "b")])
def test_ped_anova_takes_its_top_trials_in_the_phases_direction(mode, top):
    rows, histories = two_ended()
    kinds, constant = param_kinds(r["config"] for r in rows)
    report = importance_report(rows, histories, "loss", kinds, constant, mode=mode)
    imp = report["methods"]["ped_anova"]["importances"]
    assert report["mode"] == mode
    assert max(imp, key=imp.get) == top
