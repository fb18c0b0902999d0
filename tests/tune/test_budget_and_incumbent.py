"""What ResumableOptunaSearch tells the study about a trial's budget.

A trial ASHA stopped before train.epochs is PRUNED in the study, with the values of the epochs
it ran; a trial that ran them all is COMPLETE with its best epoch's value. The searcher is
driven as Tune drives it (suggest, on_trial_result, on_trial_complete); no Ray cluster is
started.
"""

import optuna

from clipsearch.tune.searcher import ResumableOptunaSearch

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
