"""`clipsearch space check` and the search commands' `--dry-run`: every check the command makes,
what it would run printed on stdout, exit 0; Ray not started (ray.init refused), nothing written.
Bad input: one line, exit 2."""

import sys

import pytest

from clipsearch import cli
from clipsearch.results import write_json
from clipsearch.tune.space import SHIPPED_SPACES

from .helpers import write_space
from .test_phases import PHASE2_SPACE, PHASE3_SPACE, SEARCHED, lay_down_phase1


def invoke(monkeypatch, capsys, *args):
    """The console script in this process (main() as the entry point runs it)."""
    monkeypatch.setattr(sys, "argv", ["clipsearch", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr()


@pytest.fixture
def ray_refused(monkeypatch):
    """Ray may be imported (the runner's modules do, --resume asks Tune whether a phase can be
    restored) but not started: ray.init fails the test, and no session may be left up."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", refuse)
    yield ray
    assert not ray.is_initialized()


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ------------------------------------------------------------------------------ space check

def test_space_check_prints_the_trials_and_epochs_without_starting_ray(in_tmp, ray_refused, monkeypatch, capsys):
    code, out = invoke(monkeypatch, capsys, "space", "check", SHIPPED_SPACES / "phase1_quick.yaml")
    assert code == 0, out.err
    assert "phase1_quick.yaml: phase1 (Optuna search)" in out.out and "trials: 16; 2 at a time" in out.out
    assert "at most 128 trial-epochs (16 trials x 8) = 64 full-data epochs" in out.out
    assert files_under(in_tmp) == []


def test_space_check_applies_set_as_the_search_would(in_tmp, ray_refused, monkeypatch, capsys):
    code, out = invoke(monkeypatch, capsys, "space", "check", "--phase", "phase1", "--quick",
                       "--set", "train.epochs=2", "--set", "data.fraction=0.25")
    assert code == 0, out.err
    assert "at most 32 trial-epochs (16 trials x 2) = 8 full-data epochs at data.fraction 0.25" in out.out


def test_space_check_gives_each_classify_method_its_block(in_tmp, ray_refused, monkeypatch, capsys):
    code, out = invoke(monkeypatch, capsys, "space", "check", SHIPPED_SPACES / "classify_quick.yaml")
    assert code == 0, out.err
    assert [line.split("method ")[1].split()[0] for line in out.out.splitlines() if "classify, method" in line] == \
        ["ce", "ntxent", "supcon"]


BAD = {
    "bad distribution": (["space.yaml", "--phase", "phase1"], "params:\n  optimizer.lr: {normal: [0, 1]}\n",
                         "unknown distribution"),
    "phase not in the name": (["space.yaml"], "params:\n  train.epochs: 1\n", "--phase"),
    "unknown phase": (["space.yaml", "--phase", "phase9"], "params:\n  train.epochs: 1\n", "phase9"),
    "missing file": (["nope_quick.yaml"], "", "nope_quick.yaml: file not found"),
    "--set on a searched key": (["space.yaml", "--phase", "phase1", "--set", "optimizer.lr=0.1"],
                                "params:\n  optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n", "searched"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_space_file_is_one_line_and_exit_2(in_tmp, ray_refused, monkeypatch, capsys, case):
    args, text, named = BAD[case]
    write_space(in_tmp, "space.yaml", text)
    code, out = invoke(monkeypatch, capsys, "space", "check", *args)
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, out.err
    assert named in lines[0] and "fix:" in lines[0] and out.out == ""


# ------------------------------------------------------------------------------ --dry-run

def test_phase1_dry_run_checks_and_describes_what_would_run_and_writes_nothing(in_tmp, ray_refused, monkeypatch, capsys):
    code, out = invoke(monkeypatch, capsys, "phase1", "--quick", "--dry-run", "--num-samples", "2",
                       "--set", "train.epochs=1", "--set", "data.fraction=0.05", "--seed", "7")
    assert code == 0, out.err
    assert f"-> {in_tmp / 'results' / 'default' / 'phase1'}" in out.out
    # the plan's own figures: --num-samples, --seed and the trial's threads filled in
    assert "trials: 2; 2 at a time" in out.out and "seed = 7" in out.out and "train.threads = 1" in out.out
    assert files_under(in_tmp) == []


def test_a_dry_run_makes_the_commands_checks(in_tmp, ray_refused, monkeypatch, capsys):
    code, out = invoke(monkeypatch, capsys, "phase1", "--quick", "--dry-run", "--set", "data.source=missing.csv")
    assert code == 2 and "missing.csv" in out.err and out.out == ""
    code, out = invoke(monkeypatch, capsys, "phase2", "--quick", "--dry-run")
    assert code == 2 and "phase 1's best.json not found" in out.err
    assert files_under(in_tmp) == []


def test_protocol_dry_run_says_what_waits_on_earlier_phases(in_tmp, ray_refused, monkeypatch, capsys):
    code, out = invoke(monkeypatch, capsys, "protocol", "--quick", "--dry-run", "--set", "train.epochs=1")
    assert code == 0, out.err
    blocks = out.out.strip().split("\n\n")
    assert [b.split(":")[0] for b in blocks] == ["phase1", "phase2", "phase3"]
    assert "trials: 16" in blocks[0] and "starts from phase 1's results" in blocks[1]
    assert "phase 1's top 2 optimizers" in blocks[1] and "starts from phase 2's results" in blocks[2]
    assert files_under(in_tmp) == []


def test_protocol_resume_dry_run_keeps_phase1_and_shows_phase2s_cells(in_tmp, ray_refused, monkeypatch, capsys):
    lay_down_phase1(in_tmp / "results")
    phase1 = in_tmp / "results" / "exp" / "phase1"
    write_json(phase1 / "phase.json", {"phase": "phase1", "experiment": "exp", "finished": True, "metric": "objective",
                                       "num_samples": 5, "searched": SEARCHED, "storage_path": str(phase1),
                                       "experiment_path": str(phase1 / "ray")})
    write_space(in_tmp / "spaces", "phase2.yaml", PHASE2_SPACE)
    write_space(in_tmp / "spaces", "phase3.yaml", PHASE3_SPACE)
    before = files_under(in_tmp)
    code, out = invoke(monkeypatch, capsys, "protocol", "--name", "exp", "--resume", "--spaces", "spaces", "--dry-run")
    assert code == 0, out.err
    phase1, phase2, phase3 = out.out.strip().split("\n\n")
    assert "finished before: kept" in phase1 and "trials 5" in phase1
    # phase 1's top 3 optimizers (tests/tune/test_phases.py's ranking) x the one loss of the grid
    assert "trials: 3 = 3 optimizers x 1 loss" in phase2
    assert [line.split("name=")[1] for line in phase2.splitlines() if "name=" in line and "lr=" in line] == \
        ["adamw", "radam", "momentum"]
    assert "starts from phase 2's results" in phase3
    assert files_under(in_tmp) == before


def test_sweep_dry_runs_describe_every_method_and_the_supcon_grid(in_tmp, ray_refused, monkeypatch, capsys):
    code, out = invoke(monkeypatch, capsys, "sweep", "classify", "--quick", "--dry-run", "--methods", "ce,supcon")
    assert code == 0, out.err
    assert [line.split(":")[0] for line in out.out.splitlines() if line.startswith("classify-")] == \
        ["classify-ce", "classify-supcon"]
    code, out = invoke(monkeypatch, capsys, "sweep", "supcon", "--quick", "--dry-run")
    assert code == 0, out.err
    assert "trials: 8 = 2 optimizer.lr x 2 optimizer.weight_decay x 2 loss.temperature" in out.out
    assert files_under(in_tmp) == []
