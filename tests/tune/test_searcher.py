"""The driver killed after Optuna finished a trial but before Tune's snapshot saw it finish:
the restored searcher must not report to, or tell, the finished Optuna trial again.

The race is replayed here step by step (no timing involved): the searcher's state is saved as
Tune snapshots it, the trial then finishes in the study, and a new searcher is restored from the
older snapshot as `Tuner.restore` does.
"""

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from clipsearch.tune.searcher import ResumableOptunaSearch


def space(trial):
    return {"x": trial.suggest_float("x", 0.0, 1.0)}


def searcher(cls, db):
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    return cls(space, metric="objective", mode="max", storage=storage, study_name="s",
               sampler=optuna.samplers.TPESampler(seed=0))


def result(value, epoch):
    return {"objective": value, "training_iteration": epoch}


def killed_after_optuna_finished(cls, tmp_path):
    """Run one trial to completion after a snapshot taken at its first epoch; return a searcher
    restored from that snapshot (what the resumed driver holds)."""
    first = searcher(cls, tmp_path / "optuna.db")
    first.suggest("t1")
    first.on_trial_result("t1", result(1.0, 1))
    first.save(str(tmp_path / "snapshot.pkl"))          # Tune's last snapshot before the kill
    first.on_trial_result("t1", result(2.0, 2))
    first.on_trial_complete("t1", result(2.0, 2))       # in optuna.db at once; then SIGKILL
    resumed = searcher(cls, tmp_path / "optuna.db")
    resumed.restore(str(tmp_path / "snapshot.pkl"))
    return resumed


def study(tmp_path):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def test_the_stock_searcher_fails_on_the_replayed_race(tmp_path):
    # the reason ResumableOptunaSearch exists: without it the resumed phase dies here
    resumed = killed_after_optuna_finished(OptunaSearch, tmp_path)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        resumed.on_trial_result("t1", result(2.0, 2))


def test_resumed_searcher_keeps_the_finished_trial_as_told(tmp_path):
    resumed = killed_after_optuna_finished(ResumableOptunaSearch, tmp_path)
    resumed.on_trial_result("t1", result(2.0, 2))      # Tune runs the trial on from its checkpoint
    resumed.on_trial_complete("t1", result(2.5, 2))
    trials = study(tmp_path).get_trials()
    assert len(trials) == 1
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and trials[0].value == 2.0
    assert trials[0].intermediate_values == {1: 1.0, 2: 2.0}


def test_unfinished_trials_are_still_reported_and_told(tmp_path):
    first = searcher(ResumableOptunaSearch, tmp_path / "optuna.db")
    first.suggest("t1")
    first.on_trial_result("t1", result(1.0, 1))
    first.save(str(tmp_path / "snapshot.pkl"))
    resumed = searcher(ResumableOptunaSearch, tmp_path / "optuna.db")
    resumed.restore(str(tmp_path / "snapshot.pkl"))
    resumed.on_trial_result("t1", result(3.0, 2))
    resumed.on_trial_complete("t1", result(3.0, 2))
    (trial,) = study(tmp_path).get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 3.0
    assert trial.intermediate_values == {1: 1.0, 2: 3.0}


def choices(trial):
    return {"loss": trial.suggest_categorical("loss", ["a", "b"]), "lr": trial.suggest_categorical("lr", [1, 2])}


@pytest.mark.parametrize("sampler", [optuna.samplers.RandomSampler(seed=0),
                                     optuna.samplers.TPESampler(seed=0, n_startup_trials=1)], ids=["random", "tpe"])
def test_a_configuration_the_study_has_run_or_is_running_is_not_drawn_again(tmp_path, sampler):
    """4 cells: the first 4 suggestions are 4 different cells (a repeat trains exactly as its
    twin did); the repeats Optuna drew are in the study as FAIL, naming their twin. TPE, given the
    same history, proposes the same cell again and again: its redraws are random ones."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    search = ResumableOptunaSearch(choices, metric="objective", mode="max", storage=storage, study_name="s",
                                   sampler=sampler, max_epochs=1)
    drawn = []
    for i in range(4):
        drawn.append(tuple(search.suggest(f"t{i}").values()))
        if i % 2:  # half of them finish before the next draw, half are still running
            search.on_trial_complete(f"t{i}", {"objective": float(i), "epoch": 1})
    assert len(set(drawn)) == 4
    trials = study(tmp_path).get_trials()
    repeats = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all("clipsearch.duplicate_of" in t.user_attrs for t in repeats)
    assert len(repeats) < 4 * 3  # a random redraw finds a new cell of 4 in a few tries, not MAX_REDRAWS
    kept = {tuple(t.params.values()) for t in trials if t.state != optuna.trial.TrialState.FAIL}
    assert kept == set(drawn)
    assert isinstance(search._ot_study.sampler, type(sampler))  # the study's own sampler is back


def test_a_space_with_nothing_new_left_runs_the_last_draw():
    search = ResumableOptunaSearch(choices, metric="objective", mode="max",
                                   sampler=optuna.samplers.RandomSampler(seed=1))
    for i in range(4):
        search.suggest(f"t{i}")
    assert search.suggest("t4") is not None  # every cell taken: a repeat, after MAX_REDRAWS draws
