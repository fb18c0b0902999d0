"""What ResumableOptunaSearch tells the study about a trial's budget, and phase 3's first trial.

A trial ASHA stopped before train.epochs is PRUNED in the study, with the values of the epochs
it ran; a trial that ran them all is COMPLETE with its best epoch's value. Phase 3 enqueues
phase 2's best, so that its first trial is that configuration itself. The searcher is driven
as Tune drives it (suggest, on_trial_result, on_trial_complete); no Ray cluster is started.
"""

import json

import optuna
import pytest

from clipsearch.tune.phases import Options, prepare, startup_warning_of
from clipsearch.tune.runner import _optuna_search
from clipsearch.tune.searcher import ResumableOptunaSearch
from clipsearch.tune.space import (OptunaSpace, SearchedParam, default_space_path, incumbent_point, load_space, optuna_sampler,
                                   resolve_relative, resolved_flat, sampler_settings)

from .test_space import SHIPPED, write

PRUNED, COMPLETE, FAIL = optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL


def space(trial):
    return {"x": trial.suggest_float("x", 0.0, 1.0)}


def searcher(tmp_path, max_epochs=4, db="optuna.db", space=space, sampler=None, **kwargs):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / db}")
    return ResumableOptunaSearch(space, metric="objective", mode="max", storage=storage, study_name="s",
                                 sampler=sampler or optuna.samplers.TPESampler(seed=0), max_epochs=max_epochs, **kwargs)


def result(value, epoch, iteration=None):
    return {"objective": value, "epoch": epoch, "training_iteration": epoch if iteration is None else iteration}


def only_trial(tmp_path, db="optuna.db"):
    (trial,) = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / db}").get_trials()
    return trial


# ------------------------------------------------------------------------------ the budget

def test_a_trial_asha_stopped_is_pruned_with_the_values_of_its_epochs(tmp_path):
    search = searcher(tmp_path, max_epochs=4)
    search.suggest("t1")
    search.on_trial_result("t1", result(1.0, 1))
    # ASHA stops the trial on its epoch-2 result: Tune hands that result to on_trial_complete only
    search.on_trial_complete("t1", result(1.5, 2))
    trial = only_trial(tmp_path)
    assert trial.state == PRUNED
    assert trial.intermediate_values == {1: 1.0, 2: 1.5} and trial.value == 1.5


def test_a_pruned_trial_whose_last_epoch_was_reported_is_not_reported_twice(tmp_path, recwarn):
    search = searcher(tmp_path, max_epochs=4)
    search.suggest("t1")
    for epoch, value in ((1, 1.0), (2, 1.5)):
        search.on_trial_result("t1", result(value, epoch))
    search.on_trial_complete("t1", result(1.5, 2))
    assert only_trial(tmp_path).state == PRUNED and only_trial(tmp_path).intermediate_values == {1: 1.0, 2: 1.5}
    assert not [w for w in recwarn if "already reported" in str(w.message)]


def test_a_trial_that_ran_its_budget_is_complete_with_its_best_epochs_value(tmp_path):
    search = searcher(tmp_path, max_epochs=4)
    search.suggest("t1")
    for epoch, value in ((1, 1.0), (2, 3.0), (3, 2.0)):
        search.on_trial_result("t1", result(value, epoch))
    search.on_trial_complete("t1", result(2.5, 4))  # ASHA's max_t stop: the last epoch, as above
    trial = only_trial(tmp_path)
    assert trial.state == COMPLETE and trial.value == 3.0  # the best epoch, as clipsearch ranks it
    assert trial.intermediate_values == {1: 1.0, 2: 3.0, 3: 2.0, 4: 2.5}


def test_steps_are_epochs_even_where_training_iteration_differs(tmp_path):
    search = searcher(tmp_path, max_epochs=4)
    search.suggest("t1")
    search.on_trial_result("t1", result(1.0, 3, iteration=1))  # a restored trial counting anew
    search.on_trial_complete("t1", result(2.0, 4, iteration=2))
    trial = only_trial(tmp_path)
    assert trial.intermediate_values == {3: 1.0, 4: 2.0} and trial.state == COMPLETE


def test_an_errored_trial_fails_and_without_a_budget_every_trial_completes(tmp_path):
    search = searcher(tmp_path, max_epochs=4, db="errored.db")
    search.suggest("t1")
    search.on_trial_result("t1", result(1.0, 1))
    search.on_trial_complete("t1", error=True)
    assert only_trial(tmp_path, "errored.db").state == FAIL
    search = searcher(tmp_path, max_epochs=None, db="unbudgeted.db")
    search.suggest("t1")
    search.on_trial_complete("t1", result(1.0, 1))
    assert only_trial(tmp_path, "unbudgeted.db").state == COMPLETE


# ------------------------------------------------------------------------------ phase 3's incumbent

CARRIED = {"loss.name": "sogclr", "optimizer.name": "radam", "optimizer.lr": 1e-3, "optimizer.weight_decay": 0.02,
           "loss.gamma": 0.7}


def quick_phase3():
    return resolve_relative(load_space(default_space_path("phase3", True, SHIPPED), "phase3"), CARRIED)


def ran_with(space, config):
    """What a trial of `config` runs, registry defaults filled in."""
    return resolved_flat(space.base.config(config, "test"))


def test_the_incumbent_point_is_phase2s_best_for_every_parameter_phase3_draws():
    space = quick_phase3()
    point, left_out = incumbent_point(space, CARRIED)
    incumbent = ran_with(space, {**CARRIED, **space.constants})
    assert left_out == {}
    assert set(point) == {p.key for p in space.params}  # sogclr's knobs only: tau_init left the space
    assert point["optimizer.lr"] == 1e-3 and point["loss.gamma"] == 0.7
    assert point == {key: incumbent[key] for key in point}  # registry defaults: temperature, embed_dim, ...


def test_a_value_the_space_cannot_draw_is_left_out_and_named(tmp_path):
    space = quick_phase3()
    choices = next(p for p in space.params if p.key == "model.embed_dim").values
    outside = max(choices) * 2
    point, left_out = incumbent_point(space, {**CARRIED, "model.embed_dim": outside})
    assert left_out == {"model.embed_dim": outside} and "model.embed_dim" not in point


def test_a_conditional_parameter_is_in_the_point_only_where_the_incumbent_meets_its_condition(tmp_path):
    path = write(tmp_path, "params:\n  scheduler.name: {choice: [cosine, plateau]}\n"
                           "  scheduler.patience: {int: [1, 3], when: {scheduler.name: [plateau]}}\n")
    space = resolve_relative(load_space(path, "phase3"), CARRIED)
    cosine, _ = incumbent_point(space, {**CARRIED, "scheduler.name": "cosine"})
    plateau, _ = incumbent_point(space, {**CARRIED, "scheduler.name": "plateau", "scheduler.patience": 2})
    assert cosine == {"scheduler.name": "cosine"}
    assert plateau == {"scheduler.name": "plateau", "scheduler.patience": 2}


def test_the_searchers_first_trial_is_the_enqueued_incumbent(tmp_path):
    space = quick_phase3()
    point, _ = incumbent_point(space, CARRIED)
    sampler = optuna_sampler(sampler_settings(space.sampler, space.num_samples), seed=0)
    search = searcher(tmp_path, space=OptunaSpace(space.params, {**CARRIED, **space.constants}), sampler=sampler,
                      points_to_evaluate=[point], max_epochs=3)
    first, second = search.suggest("t1"), search.suggest("t2")
    incumbent = ran_with(space, {**CARRIED, **space.constants})
    assert ran_with(space, first) == incumbent
    assert ran_with(space, second) != incumbent  # the next one is drawn


def lay_down_phase2(results, carried):
    folder = results / "exp" / "phase2"
    folder.mkdir(parents=True)
    decided = {k: v for k, v in carried.items() if k not in ("loss.name", "optimizer.name")}
    (folder / "best.json").write_text(json.dumps({"decided": decided, "config": carried}), encoding="utf-8")


def test_prepared_phase3_enqueues_phase2s_best_and_the_runner_runs_it_first(tmp_path, capsys):
    results = tmp_path / "results"
    lay_down_phase2(results, CARRIED)
    plan = prepare("phase3", Options(name="exp", quick=True, spaces_dir=SHIPPED, results=results))
    space = quick_phase3()
    assert plan.state["points"] == [incumbent_point(space, CARRIED)[0]]
    assert plan.state["sampler"]["kind"] == "tpe"
    plan.phase_dir.mkdir(parents=True)
    first = _optuna_search(plan).suggest("t1")
    assert ran_with(space, first) == ran_with(space, {**CARRIED, **plan.state["constants"]})
    # nothing left out of the point; the start-up warning only where the space's budget calls for it
    assert capsys.readouterr().err.strip() == (startup_warning_of(plan.state) or "")


@pytest.mark.parametrize("param, value, drawn", [
    (SearchedParam("model.embed_dim", "choice", (64, 128)), 64.0, 64),
    (SearchedParam("model.embed_dim", "choice", (64, 128)), 32, None),
    (SearchedParam("model.embed_dim", "choice", (64, 128)), "64", None),
    (SearchedParam("loss.flag", "choice", (0, 1)), True, None),          # a bool is not the choice 1
    (SearchedParam("scheduler.warmup_epochs", "int", (0, 5)), 1.0, 1),
    (SearchedParam("scheduler.warmup_epochs", "int", (0, 5)), 0.5, None),
    (SearchedParam("optimizer.lr", "loguniform", (1e-4, 1e-2)), 1e-2, 1e-2),
    (SearchedParam("optimizer.lr", "loguniform", (1e-4, 1e-2)), 2e-2, None),
    (SearchedParam("optimizer.lr", "loguniform", (1e-4, 1e-2)), None, None),
])
def test_a_parameter_holds_the_values_its_draws_can_be_and_gives_them_as_drawn(param, value, drawn):
    assert param.holds(value) is (drawn is not None)
    if drawn is not None:
        assert param.as_drawn(value) == drawn and type(param.as_drawn(value)) is type(drawn)
