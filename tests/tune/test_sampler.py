"""The `sampler:` block of the Optuna phases: bad blocks are one InputError naming the key; the
start-up trials are sized to the budget (and to --num-samples), so that the quick phase 1
really is a TPE search; a phase that would be mostly random says so. No Ray here."""

import math
from pathlib import Path

import optuna
import pytest
import yaml

from clipsearch.errors import InputError
from clipsearch.tune.phases import Options, prepare
from clipsearch.tune.space import (SAMPLERS, OptunaSpace, default_space_path, default_startup_trials, load_space,
                                   optuna_sampler, random_start_trials, sampler_settings, startup_warning)

from .helpers import space_error_line

SHIPPED = Path(__file__).resolve().parents[2] / "search_spaces"
QUICK_PHASE1 = default_space_path("phase1", True, SHIPPED)


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def quick_phase1_with(tmp_path, sampler_line=""):
    """The shipped quick phase 1 space with the test's `sampler:` line for the file's own (none:
    the default sampler)."""
    doc = yaml.safe_load(QUICK_PHASE1.read_text(encoding="utf-8"))
    doc.pop("sampler", None)
    return write(tmp_path, yaml.safe_dump(doc, sort_keys=False) + sampler_line + "\n")


# ------------------------------------------------------------------------------ bad blocks

BAD = {  # case: (block, the key named, the message)
    "not a mapping": ("sampler: tpe", "sampler", "sampler must be a mapping"),
    "unknown kind": ("sampler: {kind: cmaes}", "sampler.kind", "unknown sampler kind 'cmaes'"),
    "grid": ("sampler: {kind: grid}", "sampler.kind", "kind grid cannot drive a Bayesian phase"),
    "unknown option": ("sampler: {kind: tpe, n_startup: 3}", "sampler.n_startup", "unknown tpe sampler option"),
    "another kind's option": ("sampler: {kind: random, n_startup_trials: 3}", "sampler.n_startup_trials",
                              "unknown random sampler option"),
    "gp's missing option": ("sampler: {kind: gp, multivariate: true}", "sampler.multivariate",
                            "unknown gp sampler option"),
    "a seed of its own": ("sampler: {seed: 3}", "sampler.seed", "unknown tpe sampler option 'seed'"),
    "negative start-up": ("sampler: {n_startup_trials: -1}", "sampler.n_startup_trials", "whole number >= 0"),
    "start-up not a number": ("sampler: {n_startup_trials: three}", "sampler.n_startup_trials", "whole number >= 0"),
    "start-up a bool": ("sampler: {n_startup_trials: true}", "sampler.n_startup_trials", "whole number >= 0"),
    "start-up a fraction": ("sampler: {n_startup_trials: 2.5}", "sampler.n_startup_trials", "whole number >= 0"),
    "zero candidates": ("sampler: {n_ei_candidates: 0}", "sampler.n_ei_candidates", "whole number >= 1"),
    "flag not a bool": ("sampler: {multivariate: often}", "sampler.multivariate", "must be true or false"),
    "group without multivariate": ("sampler: {multivariate: false, group: true}", "sampler.group",
                                   "group needs the multivariate TPE"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sampler_block_is_one_input_error_naming_file_key_and_fix(tmp_path, case):
    block, key, message = BAD[case]
    path = quick_phase1_with(tmp_path, block)
    line = space_error_line(path, "phase1")
    assert message in line and f"{path}: {key}:" in line


def test_the_fix_for_a_seed_points_at_the_phases_seed(tmp_path):
    with pytest.raises(InputError) as info:
        load_space(quick_phase1_with(tmp_path, "sampler: {seed: 3}"), "phase1")
    assert "--seed" in info.value.fix


def test_a_grid_phase_takes_no_sampler(tmp_path):
    path = write(tmp_path, "sampler: {kind: tpe}\nparams:\n  loss.name: {grid: [sogclr]}\n")
    with pytest.raises(InputError, match="unknown key 'sampler' in a phase2 space.*belongs in a phase1 space"):
        load_space(path, "phase2")


@pytest.mark.parametrize("phase", ["phase1", "phase3"])
def test_every_optuna_phase_reads_the_block(tmp_path, phase):
    path = write(tmp_path, "sampler: {kind: gp, n_startup_trials: 4}\n"
                           "params:\n  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    assert load_space(path, phase).sampler == {"kind": "gp", "n_startup_trials": 4}


# ------------------------------------------------------------------------------ settings and samplers

@pytest.mark.parametrize("num_samples, startup",
                         [(1, 2), (4, 2), (8, 2), (12, 3), (16, 4), (20, 5), (40, 10), (500, 10)])
def test_default_startup_trials_are_a_quarter_of_the_budget_between_2_and_10(num_samples, startup):
    assert default_startup_trials(num_samples) == startup


def test_settings_fill_the_defaults_and_keep_what_the_file_sets():
    assert sampler_settings({"kind": "tpe"}, 12) == {"kind": "tpe", "n_startup_trials": 3, "multivariate": True,
                                                     "group": True, "constant_liar": True}
    assert sampler_settings({"kind": "tpe", "n_startup_trials": 7}, 40)["n_startup_trials"] == 7
    assert sampler_settings({"kind": "tpe", "multivariate": False}, 12)["group"] is False  # group needs it
    assert sampler_settings({"kind": "gp"}, 20) == {"kind": "gp", "n_startup_trials": 5}
    assert sampler_settings({"kind": "random"}, 20) == {"kind": "random"}


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_every_kind_builds_its_optuna_sampler_seeded(kind):
    settings = sampler_settings({"kind": kind}, 12)
    sampler = optuna_sampler(settings, seed=3)
    assert isinstance(sampler, getattr(optuna.samplers, SAMPLERS[kind].cls))
    again = optuna_sampler(settings, seed=3)
    draws = [optuna.create_study(sampler=s).ask().suggest_float("x", 0.0, 1.0) for s in (sampler, again)]
    assert draws[0] == draws[1]


def cheap_objective(config):
    """Higher near lr 3e-3 and for adamw: something for TPE to find, in microseconds."""
    return -abs(math.log10(config["optimizer.lr"]) + 2.5) + (config["optimizer.name"] == "adamw")


@pytest.mark.parametrize("sampler", ["the file's", "the default"])
def test_quick_phase1_makes_tpe_draws_after_a_few_startup_trials(tmp_path, monkeypatch, sampler):
    space = load_space(QUICK_PHASE1 if sampler == "the file's" else quick_phase1_with(tmp_path), "phase1")
    settings = sampler_settings(space.sampler, space.num_samples)
    sampler = optuna_sampler(settings, seed=0)
    modelled = []  # the trials whose values TPE drew from its densities, not at random
    sample_relative = sampler.sample_relative

    def spy(study, trial, search_space):
        drawn = sample_relative(study, trial, search_space)
        if drawn:
            modelled.append(trial.number)
        return drawn

    monkeypatch.setattr(sampler, "sample_relative", spy)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    draw = OptunaSpace(space.params, space.constants)
    for _ in range(space.num_samples):
        trial = study.ask()
        constants = draw(trial)
        study.tell(trial, cheap_objective({**trial.params, **constants}))
    startup = settings["n_startup_trials"]
    assert modelled == list(range(startup, space.num_samples))
    # most of the budget is model-based: Optuna's default of 10 start-up trials would leave 2 of 12
    assert len(modelled) > space.num_samples / 2


# ------------------------------------------------------------------------------ the warning

@pytest.mark.parametrize("startup, num_samples, concurrent, enqueued, random", [
    (3, 12, 1, 0, 3),
    (3, 12, 2, 0, 4),    # the second of two trials started together has no result to model either
    (10, 4, 1, 0, 4),
    (2, 4, 2, 1, 2),     # phase 3 quick: the incumbent, then two random trials
    (1, 4, 2, 1, 1),
    (0, 4, 2, 0, 0),
])
def test_random_start_trials_counts_trials_started_before_the_model(startup, num_samples, concurrent, enqueued, random):
    settings = {"kind": "tpe", "n_startup_trials": startup}
    assert random_start_trials(settings, num_samples, concurrent, enqueued) == random


def test_warning_when_the_budget_is_smaller_than_the_startup_trials():
    settings = sampler_settings({"kind": "tpe", "n_startup_trials": 10}, 4)
    message = startup_warning(settings, num_samples=4, max_concurrent=1, phase="phase1")
    assert message.startswith("warning: phase1: 4 of its 4 trials are random") and "\n" not in message
    assert "n_startup_trials=10" in message and "num_samples" in message


def test_no_warning_for_the_quick_phase1_space_or_a_random_sampler(tmp_path):
    for path in (QUICK_PHASE1, quick_phase1_with(tmp_path)):  # its own sampler, and the default
        space = load_space(path, "phase1")
        settings = sampler_settings(space.sampler, space.num_samples)
        assert startup_warning(settings, space.num_samples, space.max_concurrent) is None
    assert startup_warning(sampler_settings({"kind": "random"}, 2), 2, 2) is None  # random is what it says


def test_prepare_sizes_the_startup_trials_to_num_samples_and_warns_on_stderr(tmp_path, capsys):
    def state(space, num_samples=None):
        opts = Options(name="exp", space=space, num_samples=num_samples, results=tmp_path / "results")
        return prepare("phase1", opts).state

    default = quick_phase1_with(tmp_path)  # 16 trials, no sampler: block
    assert state(default)["sampler"]["n_startup_trials"] == 4
    assert state(default, num_samples=40)["sampler"]["n_startup_trials"] == 10
    assert capsys.readouterr().err == ""
    explicit = quick_phase1_with(tmp_path, "sampler: {kind: tpe, n_startup_trials: 5}")
    assert state(explicit, num_samples=40)["sampler"]["n_startup_trials"] == 5
    assert state(explicit, num_samples=6)["sampler"] == {"kind": "tpe", "n_startup_trials": 5, "multivariate": True,
                                                         "group": True, "constant_liar": True}
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: phase1: 6 of its 6 trials are random")
    assert not (tmp_path / "results").exists()  # prepare writes nothing
