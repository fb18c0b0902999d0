"""`mode: min`: a loss as the metric. The lowest value is the best everywhere a phase decides:
the ranking and trials.csv, best.json, the Optuna study's direction and a complete trial's value
(its best epoch's), and the progress line's best so far. No Ray cluster."""

import optuna

from clipsearch.results import TrialRecord, best_summary, rank_trials, trial_rows
from clipsearch.tune.callbacks import ProgressLines
from clipsearch.tune.phases import Options, prepare
from clipsearch.tune.runner import _optuna_search

from .test_budget_and_incumbent import result
from .test_space import write

SPACE = """base: quick
metric: train_loss
mode: min
num_samples: 3
params:
  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
  train.epochs: 3
"""


def records():
    def trial(trial_id, values):
        return TrialRecord(trial_id, "TERMINATED", {"optimizer.lr": 1e-3}, [{"epoch": e + 1, "train_loss": v}
                                                                            for e, v in enumerate(values)])
    return [trial("a", [0.9, 0.5, 0.6]), trial("b", [0.8, 0.3, 0.4]), trial("c", [0.7, 0.6, 0.55])]


def test_best_json_and_trials_csv_pick_the_lowest_loss():
    best = best_summary("phase1", "exp", "train_loss", records(), ["optimizer.lr"], mode="min")
    assert (best["trial_id"], best["score"], best["best_epoch"], best["mode"]) == ("b", 0.3, 2, "min")
    rows = trial_rows(records(), rank_trials(records(), "train_loss", "min"), "train_loss", 3, "min")
    assert [(r["trial_id"], r["rank"], r["best_train_loss"]) for r in rows] == [("b", 1, 0.3), ("a", 2, 0.5),
                                                                                 ("c", 3, 0.55)]


def test_the_study_minimises_and_a_complete_trial_is_told_its_lowest_epoch(tmp_path):
    plan = prepare("phase1", Options(name="exp", space=write(tmp_path, SPACE), results=tmp_path / "results"))
    assert plan.state["mode"] == "min"
    plan.phase_dir.mkdir(parents=True)  # as execute does
    search = _optuna_search(plan)
    search.suggest("t1")
    for epoch, loss in ((1, 0.9), (2, 0.3), (3, 0.5)):
        search.on_trial_result("t1", {**result(0, epoch), "train_loss": loss})
    search.on_trial_complete("t1", {**result(0, 3), "train_loss": 0.5})
    study = optuna.load_study(study_name="exp-phase1", storage=f"sqlite:///{tmp_path / 'results' / 'exp' / 'optuna.db'}")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.trials[0].value == 0.3 and study.best_trial.value == 0.3


def test_the_progress_lines_best_so_far_is_the_lowest(capsys):
    lines = ProgressLines("phase1", "train_loss", 3, total=2, mode="min")
    for value in (0.9, 0.4, 0.6):
        lines.on_trial_result(0, [], type("T", (), {"trial_id": "t"})(), {"epoch": 1, "train_loss": value})
    assert lines.best == 0.4
