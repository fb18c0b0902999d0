"""`clipsearch bench tune`: its trials, goodput and overhead per trial from the seconds each
variant reports, and both variants run for real on two tiny trials (the Ray one as a phase)."""

import pytest

from clipsearch.bench.tune_overhead import (LR, _in_process, _productive, _through_tune, bench_space,
                                            quick_phase1_trials_per_actor, summarise, trial_configs)
from clipsearch.results import TRIALS_CSV, read_trials_csv
from clipsearch.tune.space import default_space_path, load_space


def test_the_trials_are_quick_phase_1_trials():
    space = bench_space(trials=4)
    constants = load_space(default_space_path("phase1", quick=True), "phase1").constants
    assert space.constants["data.fraction"] == constants["data.fraction"]
    assert space.constants["train.epochs"] == constants["train.epochs"]
    assert len({c[LR] for c in trial_configs(space)}) == 4


def test_by_default_one_actor_runs_as_many_trials_as_one_of_a_quick_phase_1s_actors():
    phase1 = load_space(default_space_path("phase1", quick=True), "phase1")
    assert quick_phase1_trials_per_actor() == -(-phase1.num_samples // phase1.max_concurrent) == 8


def test_trials_take_the_files_learning_rates_in_turn_and_epochs_replace_the_files():
    space = bench_space(trials=6, epochs=2)
    lrs = [c[LR] for c in trial_configs(space)]
    assert len(lrs) == 6 and lrs[4:] == lrs[:2] and len(set(lrs)) == 4
    assert {c["train.epochs"] for c in trial_configs(space)} == {2}


def test_productive_time_is_the_sum_of_every_epochs_training_and_evaluation():
    history = [{"train_seconds": 2.0, "eval_seconds": 1.0}, {"train_seconds": 3.0, "eval_seconds": 0.5}]
    assert _productive(history) == (5.0, 1.5)


def test_goodput_and_overhead_come_from_wall_and_productive_seconds():
    runs = {"in_process": [{"wall": 100.0, "train_seconds": 80.0, "eval_seconds": 10.0}] * 2,
            "tune_reuse_actors": [{"wall": 104.0, "train_seconds": 80.0, "eval_seconds": 10.0, "phase_end_seconds": 3.0},
                                  {"wall": 108.0, "train_seconds": 80.0, "eval_seconds": 10.0, "phase_end_seconds": 5.0}]}
    figures = summarise(runs, trials=4)
    reuse = figures["tune_reuse_actors"]
    assert reuse["wall_seconds"] == 106.0
    assert reuse["goodput"] == pytest.approx(90 / 106) and reuse["eval_share"] == pytest.approx(10 / 106)
    assert reuse["overhead_per_trial_s"] == pytest.approx(16 / 4)
    assert reuse["extra_per_trial_vs_in_process_s"] == pytest.approx(6 / 4)
    assert reuse["phase_end_seconds"] == 4.0  # apart from the trials: once per phase
    assert figures["in_process"]["extra_per_trial_vs_in_process_s"] == 0.0
    assert "phase_end_seconds" not in figures["in_process"]


@pytest.mark.slow
def test_both_variants_run_the_same_trials_and_tune_runs_them_as_a_phase(tmp_path):
    from clipsearch import tracking
    from clipsearch.tune.cluster import ray_session

    space = bench_space(trials=2, epochs=1)
    space.constants["data.fraction"] = 0.05
    loop = _in_process(space, tmp_path / "loop")
    uri = tracking.default_tracking_uri(tmp_path)
    with ray_session(None):
        phase = _through_tune(space, uri, tmp_path, reuse=True, tag="reuse")
    for run in (loop, phase):
        assert run["train_seconds"] > 0 and run["eval_seconds"] > 0
        assert run["wall"] > run["train_seconds"] + run["eval_seconds"]
    assert phase["phase_end_seconds"] >= 0
    rows = read_trials_csv(tmp_path / "reuse" / TRIALS_CSV)  # the phase's own files
    assert sorted(r["config"][LR] for r in rows) == sorted(c[LR] for c in trial_configs(space))
    assert {r["status"] for r in rows} == {"TERMINATED"} and {r["epochs"] for r in rows} == {1}
    client = tracking.client(uri)
    runs = client.search_runs([client.get_experiment_by_name("reuse").experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(r.info.status for r in children) == ["FINISHED", "FINISHED"]
