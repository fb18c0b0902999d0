"""One Optuna storage per experiment: every Optuna phase's study (EXP-PHASE) in
results/EXP/optuna.db, or in the --optuna-storage a user names (a database URL, a journal file
for NFS); a phase run before keeps its own optuna.db; `clipsearch ui` starts one dashboard per
experiment's storage. No Ray cluster."""

import subprocess
import sys

import optuna
import pytest

from clipsearch.errors import InputError
from clipsearch.results import phase_study, write_json
from clipsearch.tune.phases import Options, prepare
from clipsearch.tune.runner import _optuna_search
from clipsearch.tune.studies import experiment_storage, open_storage
from clipsearch.ui import plan_services, study_storages

from .test_budget_and_incumbent import CARRIED, lay_down_phase2
from .helpers import write_space
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


# ------------------------------------------------------------------------------ a corrupt or locked storage
# Refused before anything of the phase is written: one line naming the file, exit 2, the file's
# bytes kept; a database another process holds locked is waited for a bounded time.

def optuna_db(path):
    """A real Optuna SQLite storage with one study of two trials; its bytes."""
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="exp-phase1")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    return path.read_bytes()


def refused_phase1(in_tmp, monkeypatch, capsys, *args):
    """`clipsearch phase1 --name exp ...` in this process: its one stderr line, once checked to
    be the contract's (exit 2, one line with a fix, no traceback, Ray not started)."""
    import ray

    from .test_cli import invoke

    write_space(in_tmp, "space.yaml", TINY)
    code, out = invoke(monkeypatch, capsys, "phase1", "--name", "exp", "--space", "space.yaml", *args)
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in out.err and "fix:" in lines[0], out.err
    assert not ray.is_initialized() and out.out == ""
    return lines[0]


def garbled(data):
    return b"X" + data[1:]  # the header's magic string broken: "file is not a database"


def cut(data):
    return data[:len(data) // 2]  # pages lost: "database disk image is malformed"


@pytest.mark.census("optuna db corrupt or locked")
@pytest.mark.parametrize("damage", [garbled, cut, lambda data: b"not a database at all\n"],
                         ids=["header garbled", "half of it lost", "a text file"])
def test_a_corrupt_study_database_is_one_line_and_keeps_its_bytes(in_tmp, monkeypatch, capsys, damage):
    db = in_tmp / "results" / "exp" / "optuna.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(damage(optuna_db(db)))
    before = db.read_bytes()
    line = refused_phase1(in_tmp, monkeypatch, capsys)
    assert line.startswith(f"clipsearch: error: {db.resolve()}: the Optuna storage is not a SQLite database or is "
                           f"corrupt (")
    assert "restore optuna.db from a copy, or move it aside" in line
    assert db.read_bytes() == before and sorted(p.name for p in db.parent.iterdir()) == ["optuna.db"]
    assert not (in_tmp / "results" / "mlflow.db").exists()


@pytest.mark.census("optuna db corrupt or locked")
def test_a_resumed_phase_over_a_corrupt_database_is_refused_with_its_files_untouched(tmp_path):
    results = tmp_path / "results"
    plan = prepare("phase1", Options(name="exp", space=write(tmp_path, TINY), results=results))
    plan.phase_dir.mkdir(parents=True)
    write_json(plan.phase_dir / "phase.json", plan.state)
    db = results / "exp" / "optuna.db"
    db.write_bytes(garbled(optuna_db(db)))
    state = (plan.phase_dir / "phase.json").read_bytes()
    with pytest.raises(InputError, match="the Optuna storage is not a SQLite database or is corrupt"):
        prepare("phase1", Options(name="exp", resume=True, results=results))
    assert (plan.phase_dir / "phase.json").read_bytes() == state


@pytest.mark.census("optuna db corrupt or locked")
@pytest.mark.parametrize("lock", ["BEGIN EXCLUSIVE", "BEGIN IMMEDIATE"])
def test_a_database_locked_by_another_process_is_waited_for_a_bounded_time_then_one_line(
        in_tmp, monkeypatch, capsys, lock):
    import time

    from clipsearch.tune import studies

    db = in_tmp / "results" / "exp" / "optuna.db"
    db.parent.mkdir(parents=True)
    data = optuna_db(db)
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys\n"
                               "connection = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                               f"connection.execute({lock!r})\nprint('locked', flush=True)\nsys.stdin.read()\n",
                               str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(studies, "LOCK_WAIT_S", 0.5)  # 10 s by default
        started = time.monotonic()
        line = refused_phase1(in_tmp, monkeypatch, capsys)
        assert time.monotonic() - started < 4
        assert line == (f"clipsearch: error: {db.resolve()}: the Optuna storage is locked by another process (waited "
                        f"0.5 s); fix: stop what holds it (an sqlite3 shell, a stuck process: `fuser` names it), then "
                        f"run the command again")
    finally:
        holder.stdin.close()
        holder.wait()
    assert db.read_bytes() == data and not (in_tmp / "results" / "exp" / "phase1").exists()
    studies.check_storage(f"sqlite:///{db}")  # its holder gone, the same file opens


@pytest.mark.census("optuna db corrupt or locked")
@pytest.mark.parametrize("journal, message", ids=["a garbled line", "a cut last line"], argvalues=[
    (b'{"op_code": 0}\n{not json\n{"op_code": 1}\n', "line 2 of the Optuna journal is not a JSON record"),
    (b'{"op_code": 0}\n{"op_co', "the Optuna journal's last line (2) is cut off"),
])
def test_a_corrupt_journal_file_is_one_line_and_keeps_its_bytes(in_tmp, monkeypatch, capsys, journal, message):
    (in_tmp / "optuna.log").write_bytes(journal)
    line = refused_phase1(in_tmp, monkeypatch, capsys, "--optuna-storage", "optuna.log")
    assert line.startswith(f"clipsearch: error: {in_tmp.resolve() / 'optuna.log'}: {message}; fix: move optuna.log "
                           f"aside")
    assert (in_tmp / "optuna.log").read_bytes() == journal and not (in_tmp / "results").exists()


@pytest.mark.census("optuna db corrupt or locked")
def test_a_sound_storage_passes_the_check_unchanged(tmp_path):
    from clipsearch.tune.studies import check_storage

    db = tmp_path / "optuna.db"
    data, mtime = optuna_db(db), db.stat().st_mtime_ns
    check_storage(f"sqlite:///{db}")
    check_storage(f"sqlite:///{tmp_path / 'not-yet.db'}")  # the phase creates it
    journal = tmp_path / "optuna.log"
    search_storage = open_storage(str(journal))
    optuna.create_study(storage=search_storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    check_storage(str(journal))
    assert db.read_bytes() == data and db.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db", "optuna.log"]  # no journal or lock left
