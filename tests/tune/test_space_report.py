"""describe(space): what a space file runs, in words: the trials, the sampler's random start,
ASHA's rungs (Ray's own) and the epochs the trials may spend, with what only earlier phases
can tell said to be so."""

import pytest

from clipsearch.tune.space import SHIPPED_SPACES, load_space
from clipsearch.tune.space_report import asha_rungs, budget_of, describe

from .helpers import write_space


@pytest.fixture(scope="module")
def phase1_quick():
    return load_space(SHIPPED_SPACES / "phase1_quick.yaml", "phase1")


@pytest.mark.parametrize("grace, factor, max_t", [(4, 2, 8), (2, 2, 10), (1, 3, 27), (1, 2, 1), (3, 2, 20)])
def test_asha_rungs_are_the_rungs_rays_scheduler_stops_trials_at(grace, factor, max_t):
    from ray.tune.schedulers.async_hyperband import _Bracket

    rays = sorted(milestone for milestone, _ in _Bracket(grace, max_t, factor, 0)._rungs if milestone < max_t)
    assert asha_rungs({"grace_period": grace, "reduction_factor": factor, "max_t": max_t}) == rays


def test_phase1_quick_may_spend_trials_x_epochs_x_fraction(phase1_quick):
    budget = budget_of(phase1_quick)
    assert (budget.trials, budget.epochs, budget.fraction) == (16, 8, 0.5)
    text = describe(phase1_quick)
    assert "trials: 16; 2 at a time" in text
    assert "at most 128 trial-epochs (16 trials x 8) = 64 full-data epochs at data.fraction 0.5" in text


def test_asha_expected_spend_halves_the_epochs_after_each_rung(phase1_quick):
    # rung at epoch 4 keeps 1/2: every trial trains 4 epochs, half of them 4 more: 6 a trial
    assert budget_of(phase1_quick).asha_epochs == 6
    assert "with ASHA about 96 (48 full-data)" in describe(phase1_quick)
    # rungs 2, 4, 8 below max_t 10: 2 + 2/2 + 4/4 + 2/8
    full = load_space(SHIPPED_SPACES / "phase1.yaml", "phase1")
    assert budget_of(full).asha_epochs == pytest.approx(4.25)


def test_every_searched_parameter_is_listed_with_its_distribution_and_condition(phase1_quick):
    lines = describe(phase1_quick).splitlines()
    for param in phase1_quick.params:
        line = next(line for line in lines if line.split() and line.split()[0] == param.key)
        assert param.kind in line
        assert ("when " in line) == bool(param.when)
    assert any("optimizer.momentum" in line and "when optimizer.name in [momentum, rmsprop]" in line for line in lines)
    assert any(line.strip() == "data.fraction = 0.5" for line in lines)


def test_the_sampler_line_counts_the_random_start_up_trials(phase1_quick):
    # n_startup_trials 4 with 2 at a time: the 5th trial starts before the 4th result is in
    assert "n_startup_trials 4: 5 of 16 trials drawn at random, 11 by the model" in describe(phase1_quick)
    assert "warning:" not in describe(phase1_quick)


def test_a_mostly_random_bayesian_space_carries_the_startup_warning(in_tmp):
    path = write_space(in_tmp, "phase1.yaml", "num_samples: 4\nparams:\n  optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n"
                                              "  train.epochs: 1\n")
    # 2 start-up trials (a quarter of 4, at least 2), 2 at a time: the 3rd starts before a result is in
    text = describe(load_space(path, "phase1"))
    assert "n_startup_trials 2: 3 of 4 trials drawn at random, 1 by the model" in text
    assert "warning: phase1: 3 of its 4 trials are random start-up draws" in text


def test_phase2_alone_counts_at_most_top_optimizers_x_losses_and_says_phase1_decides():
    space = load_space(SHIPPED_SPACES / "phase2_quick.yaml", "phase2")
    text = describe(space)
    assert "trials: at most 6 = phase 1's top 2 optimizers x 3 losses (the optimizers known after phase 1)" in text
    assert "grid cells: known after phase 1" in text


def test_phase2_with_phase1s_grid_counts_its_cells():
    space = load_space(SHIPPED_SPACES / "phase2_quick.yaml", "phase2")
    grid = {"optimizer": [{"name": "adamw", "lr": 0.002}, {"name": "radam", "lr": 0.003}],
            "loss": [{"name": "sogclr"}, {"name": "isogclr"}, {"name": "isogclr_v2"}], "axes": {},
            "carried": {"scheduler.name": "tanh"}}
    text = describe(space, grid=grid)
    assert "trials: 6 = 2 optimizers x 3 losses" in text and "at most 24 trial-epochs (6 trials x 4)" in text
    assert "name=adamw, lr=0.002" in text and "from phase 1's best trial: scheduler.name=tanh" in text


def test_phase3_alone_shows_relative_ranges_and_phase2s_best_run_first():
    text = describe(load_space(SHIPPED_SPACES / "phase3_quick.yaml", "phase3"))
    assert "loguniform x[0.5, 2] of the earlier phase's value" in text
    assert "run first (1):\n    phase 2's best (known after phase 2)" in text
    assert "n_startup_trials 2: 1 run first, 2 of 6 trials drawn at random, 3 by the model" in text


def test_a_searched_epoch_count_is_budgeted_at_its_largest(in_tmp):
    path = write_space(in_tmp, "phase3.yaml", "num_samples: 3\nparams:\n  train.epochs: {int: [2, 6]}\n"
                                              "  data.fraction: {choice: [0.25, 0.5]}\n")
    budget = budget_of(load_space(path, "phase3"))
    assert (budget.epochs, budget.fraction, budget.trial_epochs) == (6, 0.5, 18)


def test_the_supcon_sweep_counts_its_grid_then_the_long_run():
    space = load_space(SHIPPED_SPACES / "supcon_sweep_quick.yaml", "supcon_sweep")
    budget = budget_of(space)
    assert budget.trials == 8 and budget.trial_epochs == 8 * 1 + 3
    assert "baselines (ranked zero-shot first, not trained): timm:test_resnet, timm:test_efficientnet" in describe(space)
