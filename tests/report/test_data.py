"""The data each figure plots, checked value by value on the hand-made table (conftest.py)."""

import math

import numpy as np
import pytest

from clipsearch.report import data as D

from .conftest import STARTED, hand_histories, hand_rows


def test_param_kinds_infer_categorical_log_float_int_and_name_what_never_varies():
    configs = [{"opt": "adam", "lr": 1e-4, "gamma": 0.5, "dim": 256, "amp": True, "seed": 0},
               {"opt": "sgd", "lr": 1e-2, "gamma": 0.9, "dim": 512, "amp": False, "seed": 0},
               {"opt": "sgd", "lr": 2e-3, "gamma": 0.7, "dim": 256, "amp": True, "seed": 0, "only_here": 1.0}]
    kinds, constant = D.param_kinds(configs)
    assert {k: v.kind for k, v in kinds.items()} == {
        "amp": "categorical", "dim": "int", "gamma": "float", "lr": "log", "opt": "categorical"}
    assert kinds["opt"].choices == ("adam", "sgd")
    assert (kinds["lr"].low, kinds["lr"].high) == (1e-4, 1e-2)
    assert constant == {"only_here": "never varies (always 1.0)", "seed": "never varies (always 0)"}


def test_a_positive_range_of_one_decade_or_less_stays_linear():
    kinds, _ = D.param_kinds([{"wd": 0.01}, {"wd": 0.1}])
    assert kinds["wd"].kind == "float"
    kinds, _ = D.param_kinds([{"wd": 0.0}, {"wd": 0.1}])
    assert kinds["wd"].kind == "float"


def test_declared_distributions_override_what_the_values_suggest():
    # 0.05..0.9 spans more than a decade, but the space said uniform; the optimizer list is longer
    kinds, _ = D.param_kinds([{"g": 0.05, "opt": "sgd"}, {"g": 0.9, "opt": "adam"}])
    declared = {"g": {"name": "FloatDistribution", "attributes": {"low": 0.0, "high": 1.0, "log": False, "step": None}},
                "opt": {"name": "CategoricalDistribution", "attributes": {"choices": ["adam", "lamb"]}}}
    merged = D.with_declared(kinds, declared)
    assert (merged["g"].kind, merged["g"].low, merged["g"].high) == ("float", 0.0, 1.0)
    assert merged["opt"].choices == ("adam", "lamb", "sgd")  # a value outside the declared list is kept
    assert kinds["g"].kind == "log"


def test_scored_trials_leave_out_the_errored_trial():
    points = D.scored_trials(hand_rows(), "objective")
    assert [(p.trial_id, p.score, p.reach, p.stopped_early) for p in points] == [
        ("t1", 4, 4, False), ("t2", 3.5, 4, False), ("t3", 5, 1, True), ("t4", 1.5, 2, True), ("t5", 2, 4, False)]


def test_objective_by_optimizer_groups_scores_best_median_first():
    groups = D.objective_by(hand_rows(), "optimizer.name", "objective")
    assert [(g.name, [p.score for p in g.points], g.median) for g in groups] == [
        ("adamw", [4, 3.5], 3.75), ("radam", [5, 1.5], 3.25), ("sgd", [2], 2.0)]
    assert groups[0].offsets == (-0.15, 0.15) and groups[2].offsets == (0.0,)


def test_objective_by_loss():
    groups = D.objective_by(hand_rows(), "loss.name", "objective")
    assert [(g.name, [p.trial_id for p in g.points], g.median) for g in groups] == [
        ("clip", ["t1", "t3", "t5"], 4.0), ("sogclr", ["t2", "t4"], 2.5)]


def test_best_so_far_follows_the_ranking_rule_and_can_fall():
    # t3 scored 5 in one epoch; t4, started next, reached epoch 2: the ranking prefers t4
    progression = D.progression(hand_rows(), "objective", STARTED)
    assert [p.trial_id for p in progression.points] == ["t3", "t4", "t2", "t1", "t5"]
    assert [p.trial_id for p in progression.best] == ["t3", "t4", "t2", "t1", "t1"]
    assert [p.score for p in progression.best] == [5, 1.5, 3.5, 4, 4]


def test_common_epoch_is_the_last_one_enough_trials_reached():
    histories = {t: h for t, h in hand_histories().items() if t != "t6"}
    common = D.common_epoch(histories, "objective", min_trials=4)
    # 5 trials: epoch 2 is reached by t1, t2, t4, t5 (4 needed); epochs 3 and 4 by 3 only
    assert (common.epoch, common.needed, common.candidates) == (2, 4, 5)
    assert common.values == {"t1": 2, "t2": 3, "t4": 1.5, "t5": 1}


def test_common_epoch_value_is_the_best_so_far_at_that_epoch():
    history = [{"epoch": 1, "m": 3.0}, {"epoch": 2, "m": 1.0}, {"epoch": 3, "m": 2.0}]
    assert [D.value_at(history, "m", e) for e in (1, 2, 3, 4)] == [3.0, 3.0, 3.0, None]


def test_common_epoch_with_too_few_trials_says_why():
    histories = {t: hand_histories()[t] for t in ("t1", "t2", "t3")}
    with pytest.raises(D.Unavailable, match=r"no epoch has a value of objective for 4 trials \(at most 3 of 3"):
        D.common_epoch(histories, "objective", min_trials=4)


def test_history_from_a_trials_csv_row_is_exact_where_it_is_defined():
    row = next(r for r in hand_rows() if r["trial_id"] == "t2")  # 2, 3, 3.5, 3: best 3.5 at epoch 3
    history = D.history_from_row(row, "objective")
    assert history == [{"epoch": 3, "objective": 3.5}, {"epoch": 4, "objective": 3}]
    assert D.value_at(history, "objective", 3) == D.value_at(hand_histories()["t2"], "objective", 3) == 3.5
    assert D.value_at(history, "objective", 4) == 3.5
    assert D.value_at(history, "objective", 2) is None


def test_log_axis_plots_log10_with_a_tick_per_power_of_ten():
    axis = D.log_axis("lr", [1e-4, 1e-3, 1e-5, 1e-2, 3e-4])
    assert axis.values == pytest.approx((-4, -3, -5, -2, math.log10(3e-4)))
    assert axis.tickvals == (-5.0, -4.0, -3.0, -2.0)
    assert axis.ticktext == ("1e-5", "1e-4", "1e-3", "1e-2")
    assert axis.range == (-5.0, -2.0)


def test_a_log_axis_within_a_decade_gets_ticks_at_2_and_5_and_spans_them():
    axis = D.log_axis("lr", [1.5e-3, 6e-3])
    assert axis.ticktext == ("1e-3", "2e-3", "5e-3", "1e-2")
    assert axis.range == pytest.approx((-3.0, -2.0))
    assert axis.tickvals == pytest.approx((-3.0, math.log10(2e-3), math.log10(5e-3), -2.0))


def test_a_category_no_scored_trial_chose_keeps_its_place_on_the_axis():
    axis = D.categorical_axis("optimizer.name", ["adamw", "radam"], ("adamw", "radam", "momentum"))
    assert axis.values == (0, 1) and axis.ticktext == ("adamw", "radam", "momentum") and axis.range == (0, 2)


def test_parallel_coordinates_axes_categories_log_and_missing():
    rows = hand_rows()
    kinds, _ = D.param_kinds(r["config"] for r in rows)
    data = D.parallel_coordinates(rows, kinds, "objective")
    assert [a.label for a in data.axes] == ["loss.name", "optimizer.name", "optimizer.lr", "optimizer.momentum",
                                            "optimizer.weight_decay", "best objective"]
    assert data.trial_ids == ("t1", "t2", "t3", "t4", "t5")  # t6 errored: no score
    optimizer = data.axes[1]
    assert optimizer.values == (0, 0, 1, 1, 2) and optimizer.ticktext == ("adamw", "radam", "sgd")
    assert optimizer.range == (0, 2)
    momentum = data.axes[3]  # only t5 (scored) set it: the others sit at "n/a", below 0.9
    assert momentum.ticktext[0] == D.MISSING and momentum.values[4] == 0.9
    assert momentum.values[:4] == (momentum.tickvals[0],) * 4 and momentum.tickvals[0] < 0.9
    assert data.axes[2].ticktext == ("1e-5", "1e-4", "1e-3", "1e-2")
    assert data.color == data.axes[-1].values == (4, 3.5, 5, 1.5, 2)


def test_with_a_chance_level_the_score_axis_reaches_down_to_it():
    rows = hand_rows()
    kinds, _ = D.param_kinds(r["config"] for r in rows)
    assert D.parallel_coordinates(rows, kinds, "objective").axes[-1].range is None
    data = D.parallel_coordinates(rows, kinds, "objective", chance=0.8)
    assert (data.axes[-1].range, data.chance) == ((0.8, 5), 0.8)
    # a score below chance keeps its place: the axis spans both
    assert D.parallel_coordinates(rows, kinds, "objective", chance=2.0).axes[-1].range == (1.5, 5)


def test_a_trials_span_runs_from_its_first_reports_start_to_its_last_report():
    history = [{"epoch": 1, "timestamp": 1010.0, "time_total_s": 10.0}, {"epoch": 2, "timestamp": 1030.0}]
    assert D.trial_span(history) == (1000.0, 1030.0)
    assert D.trial_span([{"epoch": 1, "objective": 1.0}]) is None


def test_learning_curves_mark_how_each_trial_ended():
    curves = D.learning_curves(hand_histories(), hand_rows(), "objective")
    ends = {c.trial_id: (c.epochs, c.end) for c in curves}
    assert ends == {"t1": ((1, 2, 3, 4), None), "t2": ((1, 2, 3, 4), None), "t3": ((1,), "stopped early"),
                    "t4": ((1, 2), "stopped early"), "t5": ((1, 2, 3, 4), None), "t6": ((1,), "errored")}


def test_top_configurations_in_rank_order_with_the_varying_parameters():
    rows = hand_rows()
    kinds, _ = D.param_kinds(r["config"] for r in rows)
    table = D.top_configurations(rows, kinds, "objective", k=4)
    assert table.columns[:6] == ("rank", "trial_id", "epochs", "best_epoch", "best_objective", "stopped_early")
    assert "seed" not in table.columns and "optimizer.lr" in table.columns
    assert [(r[0], r[1], r[4]) for r in table.rows] == [(1, "t1", 4), (2, "t2", 3.5), (3, "t5", 2), (4, "t4", 1.5)]


def test_lr_wd_grid_averages_repeats_and_leaves_unrun_cells_empty():
    runs = [(1e-6, 0.01, 900.0), (1e-6, 0.01, 910.0), (1e-6, 0.1, 895.0), (1e-7, 0.01, 865.0)]
    rows = [{"trial_id": f"s{i}", "status": "TERMINATED", "best_objective": score, "epochs": 1,
             "config": {D.LR: lr, D.WD: wd}} for i, (lr, wd, score) in enumerate(runs)]
    kinds, _ = D.param_kinds(r["config"] for r in rows)
    assert D.is_lr_wd_sweep(kinds)
    grid = D.lr_wd_grid(rows, "objective")
    assert grid.lrs == (1e-7, 1e-6) and grid.wds == (0.01, 0.1)
    assert grid.z == ((865.0, None), (905.0, 895.0))
    assert grid.counts == ((1, 0), (2, 1))


def test_a_search_over_more_than_lr_and_wd_is_not_a_sweep():
    kinds, _ = D.param_kinds(r["config"] for r in hand_rows())
    assert not D.is_lr_wd_sweep(kinds)


def test_confusion_rows_are_percent_of_the_true_class():
    data = D.confusion_data(np.array([[8, 2], [1, 9]]), ["cat", "dog"])
    assert data.percent.tolist() == [[80.0, 20.0], [10.0, 90.0]]
    assert data.accuracy == 85.0


def test_confusion_matrix_of_the_wrong_shape_says_so():
    with pytest.raises(ValueError, match=r"\(C, C\) with C = 3"):
        D.confusion_data(np.zeros((2, 2)), ["a", "b", "c"])


def test_tsne_keeps_well_separated_classes_apart():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (15, 8)), rng.normal(5, 0.1, (15, 8))])
    labels = np.array([0] * 15 + [1] * 15)
    points = D.tsne_points(x, labels, ["zero", "one"])
    assert points.xy.shape == (30, 2)
    distances = np.linalg.norm(points.xy[:, None] - points.xy[None], axis=-1) + np.eye(30) * 1e9
    nearest = distances.argmin(axis=1)
    assert (np.array(points.labels)[nearest] == np.array(points.labels)).all()
    assert points.labels[0] == "zero" and points.labels[-1] == "one"


def test_tsne_draws_at_most_max_points():
    x = np.random.default_rng(0).normal(size=(40, 4))
    assert D.tsne_points(x, np.arange(40) % 2, max_points=20).xy.shape == (20, 2)


def test_optimizer_loss_share_sums_to_one():
    share = D.optimizer_loss_share({"optimizer.name": 0.6, "loss.name": 0.2, "lr": 0.2})
    assert share == pytest.approx({"optimizer.name": 0.75, "loss.name": 0.25})
    with pytest.raises(D.Unavailable, match="loss.name"):
        D.optimizer_loss_share({"optimizer.name": 1.0})


# ------------------------------------------------------------------------------ mode: min

def test_under_mode_min_objective_by_sorts_the_lowest_median_first():
    groups = D.objective_by(hand_rows("min"), "optimizer.name", "objective", mode="min")
    # lowest values: t1 1, t2 2 (adamw); t3 5, t4 1 (radam); t5 0.5 (sgd)
    assert [(g.name, g.median) for g in groups] == [("sgd", 0.5), ("adamw", 1.5), ("radam", 3.0)]


def test_under_mode_min_best_so_far_keeps_the_lowest_score_among_equal_reach():
    progression = D.progression(hand_rows("min"), "objective", STARTED, mode="min")
    assert [p.trial_id for p in progression.best] == ["t3", "t4", "t2", "t1", "t5"]
    assert [p.score for p in progression.best] == [5, 1, 2, 1, 0.5]


def test_under_mode_min_a_trials_value_at_an_epoch_is_its_lowest_so_far():
    history = [{"epoch": 1, "m": 3.0}, {"epoch": 2, "m": 1.0}, {"epoch": 3, "m": 2.0}]
    assert [D.value_at(history, "m", e, "min") for e in (1, 2, 3)] == [3.0, 1.0, 1.0]
    histories = {t: h for t, h in hand_histories().items() if t != "t6"}
    assert D.common_epoch(histories, "objective", min_trials=4, mode="min").values == {
        "t1": 1, "t2": 2, "t4": 1, "t5": 0.5}


def test_under_mode_min_the_best_score_takes_the_brightest_colour():
    kinds, _ = D.param_kinds(r["config"] for r in hand_rows("min"))
    assert D.parallel_coordinates(hand_rows("min"), kinds, "objective", mode="min").mode == "min"
