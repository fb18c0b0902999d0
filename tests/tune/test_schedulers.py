"""The `scheduler:` block: each kind builds its Ray Tune scheduler (the class the phase's Tuner
gets, with the space's settings), phase 1 keeps ASHA and its `asha:` block, PBT mutates the
numeric optimizer/loss params and draws its trials with Tune's own generator; a bad block is one
InputError naming `scheduler.KEY`, exit 2. No Ray cluster: the TuneConfig is built, not run."""

import pytest
from ray.tune.schedulers import (AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule,
                                 PopulationBasedTraining)
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

from clipsearch.errors import InputError
from clipsearch.tune.phases import Options, prepare
from clipsearch.tune.runner import _param_space, _tune_config
from clipsearch.tune.space import load_space

from .helpers import space_error_line
from .test_cli import invoke
from .test_space import write

SPACE = """base: quick
num_samples: 4
max_concurrent: 2
params:
  loss.name: {choice: [sogclr, isogclr]}
  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
  loss.gamma: {uniform: [0.5, 1.0]}
  model.embed_dim: {choice: [64, 128]}
  train.epochs: 8
"""


def tune_config(tmp_path, block: str, phase: str = "phase1"):
    path = write(tmp_path, SPACE + block + "\n")
    plan = prepare(phase, Options(name="exp", space=path, results=tmp_path / "results"))
    plan.phase_dir.mkdir(parents=True)  # as execute does, before the study is opened
    return plan, _tune_config(plan)


def rungs(scheduler) -> list[list[int]]:
    """The epochs where each of an ASHA / HyperBand scheduler's brackets compares trials."""
    return [sorted(epoch for epoch, _ in bracket._rungs) for bracket in scheduler._brackets]


@pytest.mark.parametrize("block, brackets", [
    ("", [[1, 2, 4, 8]]),                                                  # phase 1's default: ASHA
    ("asha: {grace_period: 2, reduction_factor: 3}", [[2, 6]]),            # the `asha:` block, as before
    ("scheduler: {kind: asha, grace_period: 2}", [[2, 4, 8]]),
    ("scheduler: {kind: hyperband, reduction_factor: 2, brackets: 3}", [[1, 2, 4, 8], [2, 4, 8], [4, 8]]),
])
def test_asha_has_one_bracket_and_hyperband_several_each_judging_later(tmp_path, block, brackets):
    _, config = tune_config(tmp_path, block)
    assert type(config.scheduler) is AsyncHyperBandScheduler
    assert rungs(config.scheduler) == brackets
    assert config.scheduler._time_attr == "epoch" and config.scheduler._max_t == 8
    assert isinstance(config.search_alg, ConcurrencyLimiter)  # Optuna, as before


def test_median_stops_by_the_median_after_its_grace_period(tmp_path):
    _, config = tune_config(tmp_path, "scheduler: {kind: median, grace_period: 3, min_samples_required: 2}")
    assert type(config.scheduler) is MedianStoppingRule
    assert (config.scheduler._grace_period, config.scheduler._min_samples_required) == (3, 2)
    assert config.scheduler._time_attr == "epoch"


def test_none_stops_no_trial_early(tmp_path):
    _, config = tune_config(tmp_path, "scheduler: {kind: none}")
    assert type(config.scheduler) is FIFOScheduler


def test_pbt_mutates_the_numeric_optimizer_and_loss_params_and_draws_its_trials_with_tune(tmp_path):
    plan, config = tune_config(tmp_path, "scheduler: {kind: pbt, perturbation_interval: 2}")
    assert type(config.scheduler) is PopulationBasedTraining
    assert set(config.scheduler._hyperparam_mutations) == {"optimizer.lr", "loss.gamma"}  # not embed_dim
    assert config.scheduler._perturbation_interval == 2 and config.scheduler._time_attr == "epoch"
    assert type(config.search_alg) is BasicVariantGenerator  # Ray's PBT takes no search algorithm
    assert plan.state["search"] == "random" and "optuna_storage" not in plan.state
    space = _param_space(plan.state)
    assert {"optimizer.lr", "loss.gamma", "model.embed_dim", "loss.name"} <= set(space)
    assert space["train.epochs"] == 8


def test_the_mode_reaches_the_tuners_config(tmp_path):
    _, config = tune_config(tmp_path, "metric: train_loss\nmode: min")
    assert (config.metric, config.mode) == ("train_loss", "min")


BAD = {  # case: (block, the key named, the message)
    "unknown kind": ("scheduler: {kind: bohb}", "scheduler.kind", "unknown scheduler kind 'bohb'"),
    "not a mapping": ("scheduler: asha", "scheduler", "must be a mapping"),
    "unknown option": ("scheduler: {kind: asha, max_t: 4}", "scheduler.max_t", "unknown asha scheduler option"),
    "another kind's option": ("scheduler: {kind: median, brackets: 2}", "scheduler.brackets",
                              "unknown median scheduler option"),
    "none takes nothing": ("scheduler: {kind: none, grace_period: 1}", "scheduler.grace_period",
                           "none takes no options"),
    "rung past the end": ("scheduler: {kind: asha, grace_period: 9}", "scheduler.grace_period",
                          "grace_period 9 exceeds train.epochs 8"),
    "factor below 2": ("scheduler: {kind: hyperband, reduction_factor: 1}", "scheduler.reduction_factor",
                       "whole number >= 2"),
    "both blocks": ("asha: {grace_period: 1}\nscheduler: {kind: asha}", "asha", "both `asha:` and `scheduler:`"),
    "pbt with a sampler": ("sampler: {kind: tpe}\nscheduler: {kind: pbt}", "scheduler.kind",
                           "pbt draws its trials at random"),
    "pbt mutating a choice": ("scheduler: {kind: pbt, mutate: [model.embed_dim]}", "scheduler.mutate",
                              "model.embed_dim is not a numeric searched param"),
    "pbt interval too long": ("scheduler: {kind: pbt, perturbation_interval: 8}", "scheduler.perturbation_interval",
                              "leaves no perturbation in 8 epochs"),
    "pbt quantile above half": ("scheduler: {kind: pbt, quantile_fraction: 0.8}", "scheduler.quantile_fraction",
                                "at most 0.5"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_scheduler_block_is_one_input_error_naming_the_key(tmp_path, case):
    block, key, message = BAD[case]
    path = write(tmp_path, SPACE + block + "\n")
    line = space_error_line(path, "phase1")
    assert f"{path}: {key}:" in line and message in line


def test_pbt_refuses_a_population_of_one_and_a_when_on_a_searched_param(tmp_path):
    one = write(tmp_path, SPACE.replace("max_concurrent: 2", "max_concurrent: 1") + "scheduler: {kind: pbt}\n", "one.yaml")
    with pytest.raises(InputError, match="population is the trials running together"):
        load_space(one, "phase1")
    conditional = SPACE + "  loss.eta: {loguniform: [1.0e-3, 1.0e-1], when: {loss.name: [isogclr]}}\n"
    path = write(tmp_path, conditional + "scheduler: {kind: pbt}\n", "when.yaml")
    with pytest.raises(InputError, match="loss.eta exists only under a `when:`"):
        load_space(path, "phase1")


def test_an_unknown_kind_on_the_command_line_is_exit_2_with_nothing_started(in_tmp, monkeypatch, capsys):
    import ray

    write(in_tmp, SPACE + "scheduler: {kind: bohb}\n")
    code, out = invoke(monkeypatch, capsys, "phase1", "--space", "space.yaml")
    assert code == 2 and len(out.err.strip().splitlines()) == 1 and "scheduler.kind" in out.err
    assert not ray.is_initialized() and not (in_tmp / "results").exists()
