"""What a phase spent, and its best against it, on the hand-made table (conftest.py)."""

import pytest

from clipsearch.report import compute as C
from clipsearch.report.data import Unavailable

from .conftest import STARTED, hand_histories, hand_rows


def test_compute_spent_counts_epochs_as_bench_search_does_and_sums_the_trials_seconds():
    rows = hand_rows()
    rows[0]["config"]["data.fraction"] = 0.25  # t1: its 4 epochs are one epoch over all pairs
    spent = C.compute_spent(rows, hand_histories(), gpus=2.0, fraction=0.5)
    # the others' 12 epochs at the phase's 0.5: 6; trial-epochs 4+4+1+2+4+1
    assert (spent.trials, spent.epochs, spent.trial_epochs) == (6, 1 + 6, 16)
    assert spent.trial_seconds == 190.0  # 10 s an epoch plus 5 s, errored t6 included
    assert spent.gpu_seconds == 380.0


def test_gpu_seconds_are_zero_on_cpu_and_unknown_without_resources():
    assert C.compute_spent(hand_rows(), {}, gpus=0.0).gpu_seconds == 0.0
    assert C.compute_spent(hand_rows(), {}, gpus=None).gpu_seconds is None
    assert C.gpus_per_trial({"resources": {"cpu": 1, "gpu": 0.5}}) == 0.5
    assert C.gpus_per_trial({"resources": {"cpu": 1}}) == 0.0
    assert C.gpus_per_trial({}) is None


def test_training_and_evaluation_seconds_come_from_the_histories_or_are_unknown():
    histories = {"t1": [{"epoch": 1, "train_seconds": 2.0, "eval_seconds": 0.5},
                        {"epoch": 2, "train_seconds": 3.0, "eval_seconds": 0.5}],
                 "gone": [{"epoch": 1, "train_seconds": 100.0}]}  # not in trials.csv: not counted
    spent = C.compute_spent(hand_rows(), histories, gpus=0.0)
    assert (spent.train_seconds, spent.eval_seconds) == (5.0, 1.0)
    spent = C.compute_spent(hand_rows(), hand_histories(), gpus=0.0)  # objective only
    assert (spent.train_seconds, spent.eval_seconds) == (None, None)


def test_the_phases_fraction_is_its_constant_else_its_base_configs_else_one():
    assert C.phase_fraction({"constants": {"data.fraction": 0.1}, "base": {"raw": {"data": {"fraction": 0.3}}}}) == 0.1
    assert C.phase_fraction({"constants": {}, "base": {"raw": {"data": {"fraction": 0.3}}}}) == 0.3
    assert C.phase_fraction({}) == 1.0


def test_best_vs_compute_adds_each_trials_compute_when_it_ends_and_follows_the_ranking():
    curve = C.best_vs_compute(hand_rows(), "objective", STARTED, "phase1")
    assert [s.trial_id for s in curve.steps] == STARTED
    assert [s.epochs for s in curve.steps] == [1, 3, 7, 11, 15, 16]
    assert [s.seconds for s in curve.steps] == [15, 40, 85, 130, 175, 190]
    # t3's 5 after one epoch, then t4 reached epoch 2: the ranking prefers it; t6 errored
    assert [s.best.trial_id for s in curve.steps] == ["t3", "t4", "t2", "t1", "t1", "t1"]
    assert [s.best.score for s in curve.steps] == [5, 1.5, 3.5, 4, 4, 4]


def test_best_vs_compute_starts_at_the_first_score_and_puts_trials_without_an_end_last():
    rows = hand_rows()
    curve = C.best_vs_compute(rows, "objective", ["t6", "t1"])  # t6 errored: compute, no score
    assert [s.trial_id for s in curve.steps] == ["t6", "t1", "t2", "t3", "t4", "t5"]
    assert curve.steps[0].best is None and [s.trial_id for s in curve.scored][0] == "t1"
    with pytest.raises(Unavailable, match="no trial has a score"):
        C.best_vs_compute([r for r in rows if r["trial_id"] == "t6"], "objective", [])


def test_stacked_phases_start_where_the_ones_before_them_stopped():
    first = C.best_vs_compute(hand_rows(), "objective", STARTED, "phase1")
    second = C.best_vs_compute(hand_rows()[:2], "objective", [], "phase2")
    a, b = C.stacked([first, second])
    assert a == first
    assert [s.epochs for s in b.steps] == [16 + 4, 16 + 8]
    assert [s.seconds for s in b.steps] == [190 + 45, 190 + 90]


def test_under_mode_min_best_vs_compute_keeps_the_lowest_score():
    curve = C.best_vs_compute(hand_rows("min"), "objective", STARTED, "phase1", mode="min")
    assert [s.best.trial_id for s in curve.steps] == ["t3", "t4", "t2", "t1", "t5", "t5"]
    assert [s.best.score for s in curve.steps] == [5, 1, 2, 1, 0.5, 0.5]
