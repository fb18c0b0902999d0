"""--resume after the phase's space file was edited (clipsearch.tune.space_change): the phase
goes on with the space it started with and says what changed in one line; a space file the
command line names that differs is refused (one line, exit 2); never a silent mix. No Ray."""

import json

import pytest

from clipsearch.errors import InputError
from clipsearch.results import write_json
from clipsearch.tune.phases import Options, prepare
from clipsearch.tune.space_change import space_changes

from .helpers import write_space
from .test_cli import invoke

SPACE = """base: quick
num_samples: 4
params:
  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
  loss.name: {choice: [clip, sogclr]}
  train.epochs: 1
"""
#: SPACE with the lr range widened, a param added, one removed, num_samples raised
EDITED = """base: quick
num_samples: 6
params:
  optimizer.lr: {loguniform: [1.0e-5, 1.0e-2]}
  optimizer.weight_decay: {uniform: [0.0, 0.1]}
  train.epochs: 1
"""


def finished_phase1(folder, space=SPACE):
    """results/exp/phase1 as a finished phase of `space` leaves its phase.json (all a resume reads
    before Ray is needed)."""
    path = write_space(folder, "space.yaml", space)
    results = folder / "results"
    plan = prepare("phase1", Options(name="exp", space=path, results=results))
    plan.phase_dir.mkdir(parents=True)
    write_json(plan.phase_dir / "phase.json", {**plan.state, "finished": True})
    return results, path, plan.state


@pytest.mark.census("changed space on resume")
def test_each_change_is_named_by_its_key_with_old_and_new_value():
    before, after = json.loads(json.dumps(_yaml(SPACE))), json.loads(json.dumps(_yaml(EDITED)))
    assert space_changes(before, after) == [
        "num_samples: 4 -> 6",
        "params.optimizer.lr.loguniform: [0.0001, 0.01] -> [1e-05, 0.01]",
        'params.loss.name: removed (was {"choice": ["clip", "sogclr"]})',
        'params.optimizer.weight_decay: added ({"uniform": [0.0, 0.1]})',
    ]
    assert space_changes(before, before) == []
    assert space_changes({"num_samples": 4}, {"num_samples": 4.0}) == ["num_samples: 4 -> 4.0"]  # YAML types count


@pytest.mark.census("changed space on resume")
def test_an_edited_space_file_is_said_and_the_phase_goes_on_with_the_space_it_started_with(tmp_path, capsys):
    results, path, started = finished_phase1(tmp_path)
    capsys.readouterr()
    path.write_text(EDITED, encoding="utf-8")
    plan = prepare("phase1", Options(name="exp", resume=True, results=results, num_samples=8))
    note = capsys.readouterr().err.strip().splitlines()[0]
    assert note == (f"note: phase1: {path.resolve()} changed since the phase started (num_samples: 4 -> 6; "
                    f"params.optimizer.lr.loguniform: [0.0001, 0.01] -> [1e-05, 0.01]; params.loss.name: removed "
                    f"(was {{\"choice\": [\"clip\", \"sogclr\"]}}); and 1 more); the phase goes on with the space it "
                    f"started with (kept in its phase.json); start another --name to search the edited space")
    # the extension draws from the params the phase started with, not the edited file's
    assert plan.state["params"] == started["params"] and plan.state["searched"] == ["optimizer.lr", "loss.name"]
    assert plan.state["space_document"] == started["space_document"]


@pytest.mark.census("changed space on resume")
def test_an_unchanged_or_reformatted_file_says_nothing(tmp_path, capsys):
    results, path, _ = finished_phase1(tmp_path)
    capsys.readouterr()
    path.write_text("# comments and layout are not the space\n" + SPACE.replace(": ", ":   "), encoding="utf-8")
    prepare("phase1", Options(name="exp", resume=True, results=results))
    assert "changed since" not in capsys.readouterr().err


@pytest.mark.census("changed space on resume")
def test_a_space_named_on_resume_that_differs_is_one_line_exit_2_and_writes_nothing(in_tmp, monkeypatch, capsys):
    results, path, _ = finished_phase1(in_tmp)
    other = write_space(in_tmp, "other.yaml", SPACE.replace("1.0e-2]", "1.0e-1]"))
    phase_json = (results / "exp" / "phase1" / "phase.json").read_bytes()
    capsys.readouterr()
    code, out = invoke(monkeypatch, capsys, "phase1", "--name", "exp", "--resume", "--space", "other.yaml")
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in out.err, out.err
    assert lines[0] == ("clipsearch: error: other.yaml: phase1 started with another space "
                        "(params.optimizer.lr.loguniform: [0.0001, 0.01] -> [0.0001, 0.1]); fix: resume without "
                        f"--space/--spaces: the phase goes on with the space it started with ({path.resolve()}, kept "
                        "in its phase.json); or start another --name to search the edited space")
    assert (results / "exp" / "phase1" / "phase.json").read_bytes() == phase_json
    assert sorted(p.name for p in (results / "exp").iterdir()) == ["phase1"]  # no lock, optuna.db or mlflow.db
    # the same space named again is no change
    prepare("phase1", Options(name="exp", resume=True, results=results, space=path))


@pytest.mark.census("changed space on resume")
def test_a_space_file_gone_or_broken_since_leaves_the_phase_to_its_phase_json(tmp_path, capsys):
    results, path, _ = finished_phase1(tmp_path)
    path.write_text("params: [oops\n", encoding="utf-8")
    capsys.readouterr()
    prepare("phase1", Options(name="exp", resume=True, results=results))
    assert (f"note: phase1: {path.resolve()} no longer reads as a space file; the phase goes on with the space it "
            f"started with (its phase.json)") in capsys.readouterr().err
    path.unlink()
    prepare("phase1", Options(name="exp", resume=True, results=results))
    assert "note:" not in capsys.readouterr().err


def _yaml(text):
    import yaml

    return yaml.safe_load(text)


@pytest.mark.census("changed space on resume")
def test_a_supcon_sweep_resumed_after_its_space_changed_says_so_or_refuses_a_named_one(tmp_path, capsys):
    from clipsearch.tune.space import default_space_path
    from clipsearch.tune.supcon import prepare_supcon

    shipped = default_space_path("supcon_sweep", quick=True).read_text(encoding="utf-8")
    path = write_space(tmp_path, "sweep.yaml", shipped)
    results = tmp_path / "results"
    prepared = prepare_supcon(Options(name="exp", quick=True, space=path, results=results))
    prepared.sweep.phase_dir.mkdir(parents=True)
    write_json(prepared.sweep.phase_dir / "phase.json", {**prepared.sweep.state, "finished": True})
    edited = shipped.replace("long_epochs: ", "long_epochs: 1")  # e.g. 3 -> 13
    assert edited != shipped
    path.write_text(edited, encoding="utf-8")
    capsys.readouterr()
    with pytest.raises(InputError, match=r"supcon-sweep started with another space \(long_epochs: "):
        prepare_supcon(Options(name="exp", quick=True, space=path, resume=True, results=results))
    prepare_supcon(Options(name="exp", quick=True, resume=True, results=results))  # not named: it goes on
    assert "note: supcon-sweep: " in capsys.readouterr().err
