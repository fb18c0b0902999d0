"""`clipsearch bench tune`: goodput and overhead per trial, from the seconds each variant reports."""

import pytest

from clipsearch.tune.bench import _configs, _productive, summarise
from clipsearch.tune.space import default_space_path, load_space


def test_the_trials_are_quick_phase_1_trials():
    shared, lrs = _configs(trials=4, epochs=None)
    constants = load_space(default_space_path("phase1", quick=True), "phase1").constants
    assert shared["data.fraction"] == constants["data.fraction"] and shared["train.epochs"] == constants["train.epochs"]
    assert len(set(lrs)) == 4


def test_productive_time_is_the_sum_of_every_epochs_training_and_evaluation():
    history = [{"train_seconds": 2.0, "eval_seconds": 1.0}, {"train_seconds": 3.0, "eval_seconds": 0.5}]
    assert _productive(history) == (5.0, 1.5)


def test_goodput_and_overhead_come_from_wall_and_productive_seconds():
    runs = {"in_process": [{"wall": 100.0, "train_seconds": 80.0, "eval_seconds": 10.0}] * 2,
            "tune_reuse_actors": [{"wall": 104.0, "train_seconds": 80.0, "eval_seconds": 10.0},
                                  {"wall": 108.0, "train_seconds": 80.0, "eval_seconds": 10.0}]}
    figures = summarise(runs, trials=4)
    reuse = figures["tune_reuse_actors"]
    assert reuse["wall_seconds"] == 106.0
    assert reuse["goodput"] == pytest.approx(90 / 106) and reuse["eval_share"] == pytest.approx(10 / 106)
    assert reuse["overhead_per_trial_s"] == pytest.approx(16 / 4)
    assert reuse["extra_per_trial_vs_in_process_s"] == pytest.approx(6 / 4)
    assert figures["in_process"]["extra_per_trial_vs_in_process_s"] == 0.0
