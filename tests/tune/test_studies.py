"""One Optuna storage per experiment: every Optuna phase's study (EXP-PHASE) in
results/EXP/optuna.db, or in the --optuna-storage a user names (a database URL, a journal file
for NFS); a phase run before keeps its own optuna.db; `clipsearch ui` starts one dashboard per
experiment's storage. No Ray cluster."""

import optuna
import pytest

from clipsearch.errors import InputError
from clipsearch.results import phase_study, write_json
from clipsearch.tune.phases import Options, prepare
from clipsearch.tune.runner import _optuna_search
from clipsearch.tune.studies import experiment_storage, open_storage
from clipsearch.ui import plan_services, study_storages

from .test_budget_and_incumbent import CARRIED, lay_down_phase2
from .test_space import SHIPPED, write

TINY = "base: quick\nnum_samples: 2\nparams:\n  optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n  train.epochs: 1\n"


def test_phases_1_and_3_keep_their_studies_in_the_experiments_one_storage(tmp_path):
    results = tmp_path / "results"
    phase1 = prepare("phase1", Options(name="exp", space=write(tmp_path, TINY), results=results))
    lay_down_phase2(results, CARRIED)
    phase3 = prepare("phase3", Options(name="exp", quick=True, spaces_dir=SHIPPED, results=results))
    storage = f"sqlite:///{(results / 'exp' / 'optuna.db').resolve()}"
    assert phase_study(phase1.phase_dir, phase1.state) == (storage, "exp-phase1")
    assert phase_study(phase3.phase_dir, phase3.state) == (storage, "exp-phase3")
    for plan in (phase1, phase3):
        plan.phase_dir.mkdir(parents=True, exist_ok=True)
        _optuna_search(plan).suggest("t1")
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {"exp-phase1", "exp-phase3"}
    assert not (phase1.phase_dir / "optuna.db").exists() and not (phase3.phase_dir / "optuna.db").exists()


def test_a_phase_run_before_keeps_its_own_database_and_a_grid_has_none(tmp_path):
    old = {"phase": "phase1", "experiment": "exp"}  # phase.json from before the experiment's storage
    assert phase_study(tmp_path / "phase1", old) == (f"sqlite:///{(tmp_path / 'phase1' / 'optuna.db').resolve()}",
                                                     "exp-phase1")
    assert phase_study(tmp_path, {"phase": "phase2", "experiment": "exp", "grid": {}}) is None
    assert phase_study(tmp_path, {"phase": "phase3", "experiment": "exp", "search": "random"}) is None  # pbt


@pytest.mark.parametrize("given, made", [
    ("sqlite:///studies.db", "sqlite:///{cwd}/studies.db"),       # relative: made absolute
    ("journal.log", "{cwd}/journal.log"),                          # a path: a journal file
])
def test_a_given_storage_is_kept_absolute(in_tmp, given, made):
    assert experiment_storage(given, in_tmp / "results" / "exp") == made.format(cwd=in_tmp.resolve())


@pytest.mark.parametrize("given, message", [
    ("redis://host:6379", "unknown storage"),
    ("sqlite:///no/such/folder/x.db", "does not exist"),
    ("no/such/folder/journal.log", "does not exist"),
    ("postgresql://user@host/db", "cannot use 'postgresql://user@host/db' (ModuleNotFoundError"),  # no driver here
])
def test_a_bad_storage_is_one_input_error_naming_the_option(in_tmp, given, message):
    with pytest.raises(InputError) as info:
        experiment_storage(given, in_tmp / "results" / "exp")
    line = str(info.value)
    assert line.startswith("--optuna-storage: ") and message in line and "fix:" in line and "\n" not in line


def test_a_journal_file_holds_the_phases_study(in_tmp):
    plan = prepare("phase1", Options(name="exp", space=write(in_tmp, TINY), results=in_tmp / "results",
                                     optuna_storage="optuna.log"))
    assert plan.state["optuna_storage"] == str(in_tmp.resolve() / "optuna.log")
    plan.phase_dir.mkdir(parents=True)
    search = _optuna_search(plan)
    search.suggest("t1")
    search.on_trial_complete("t1", {"objective": 2.0, "epoch": 1, "training_iteration": 1})
    study = optuna.load_study(study_name="exp-phase1", storage=open_storage(plan.state["optuna_storage"]))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] and study.trials[0].value == 2.0


def test_resume_under_another_storage_is_refused(tmp_path):
    results = tmp_path / "results"
    plan = prepare("phase1", Options(name="exp", space=write(tmp_path, TINY), results=results))
    plan.phase_dir.mkdir(parents=True)
    write_json(plan.phase_dir / "phase.json", {**plan.state, "finished": True})
    with pytest.raises(InputError, match="phase1 keeps its Optuna study in sqlite:///"):
        prepare("phase1", Options(name="exp", resume=True, results=results,
                                  optuna_storage=str(tmp_path / "other.log")))


def lay_down_experiments(results):
    """exp: phases 1 and 3 in results/exp/optuna.db, and a phase 2 grid; old: a phase of its own
    optuna.db (run before); elsewhere: its phases 1 and 3 in a journal file named by
    --optuna-storage."""
    shared = {"optuna_storage": str(results / "shared.log")}
    for name, phase, state in (("exp", "phase1", {}), ("exp", "phase3", {}), ("exp", "phase2", {"grid": {}}),
                               ("elsewhere", "phase1", shared), ("elsewhere", "phase3", shared)):
        write_json(results / name / phase / "phase.json", {"phase": phase, "experiment": name, **state})
    (results / "exp" / "optuna.db").touch()
    (results / "old" / "phase1").mkdir(parents=True)
    (results / "old" / "phase1" / "optuna.db").touch()
    (results / "shared.log").write_text("", encoding="utf-8")
    (results / "mlflow.db").touch()


def test_clipsearch_ui_starts_one_dashboard_per_experiments_storage(tmp_path):
    results = tmp_path / "results"
    lay_down_experiments(results)
    assert study_storages(results, "exp") == [f"sqlite:///{(results / 'exp' / 'optuna.db').resolve()}"]
    assert study_storages(results, None) == [str(results / "shared.log"),
                                             f"sqlite:///{(results / 'exp' / 'optuna.db').resolve()}",
                                             f"sqlite:///{(results / 'old' / 'phase1' / 'optuna.db').resolve()}"]
    services, _ = plan_services(results, "elsewhere", None, "127.0.0.1", 5000, 8080)
    assert [s.argv[1] for s in services[1:]] == [str(results / "shared.log")]  # what optuna-dashboard takes
    assert services[1].port == 8080


def test_classifys_methods_keep_their_studies_in_the_experiments_storage_too(tmp_path):
    from clipsearch.tune.classify import prepare_classify

    results = tmp_path / "results"
    plans = prepare_classify(Options(name="exp", quick=True, spaces_dir=SHIPPED, results=results), ["ce", "supcon"])
    storage = f"sqlite:///{(results / 'exp' / 'optuna.db').resolve()}"
    assert [phase_study(p.phase_dir, p.state) for p in plans] == [(storage, "exp-classify-ce"),
                                                                  (storage, "exp-classify-supcon")]
