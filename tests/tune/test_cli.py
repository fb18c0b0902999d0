"""Bad input to the phase commands: one line on stderr naming file, key and fix, exit 2, before
Ray starts and with nothing written."""

import sys

import pytest

from clipsearch import cli

from .helpers import run_cli, write_space

TINY = "base: quick\nnum_samples: 2\nparams:\n  optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n  train.epochs: 1\n"


def invoke(monkeypatch, capsys, *args):
    """The console script in this process (main() as the entry point runs it)."""
    monkeypatch.setattr(sys, "argv", ["clipsearch", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr()


CASES = {
    "bad space file": (["phase1", "--space", "space.yaml"], "params:\n  optimizer.lr: {normal: [0, 1]}\n",
                       "unknown distribution"),
    "unknown config key": (["phase1", "--space", "space.yaml"], "params:\n  train.nope: 1\n", "train.nope"),
    "phase 2 without phase 1": (["phase2", "--space", "space.yaml"], "params:\n  train.epochs: 1\n",
                                "phase 1's best.json not found"),
    "phase 3 without phase 2": (["phase3", "--space", "space.yaml"], "params:\n  train.epochs: 1\n",
                                "phase 2's best.json not found"),
    "resume of nothing": (["phase1", "--space", "space.yaml", "--resume"], TINY, "no phase1 of experiment"),
    "bad --set": (["phase1", "--space", "space.yaml", "--set", "train.nope=1"], TINY, "train.nope"),
    "--set on a searched key": (["phase1", "--space", "space.yaml", "--set", "optimizer.lr=0.1"], TINY, "searched"),
    "missing data": (["phase1", "--space", "space.yaml", "--set", "data.source=missing.csv"], TINY, "missing.csv"),
    "bad --cpus-per-trial": (["phase1", "--space", "space.yaml", "--cpus-per-trial", "0"], TINY, "--cpus-per-trial"),
    "bad --name": (["phase1", "--space", "space.yaml", "--name", "../up"], TINY, "--name"),
    "eval not every epoch": (["phase1", "--space", "space.yaml", "--set", "eval.every=2"], TINY, "eval.every"),
    "missing space": (["phase1", "--space", "nope.yaml"], TINY, "nope.yaml"),
    "a point off its range": (["phase1", "--space", "space.yaml"], TINY + "points: [{optimizer.lr: 0.5}]\n",
                              "points[1].optimizer.lr"),
    "a bad mode": (["phase1", "--space", "space.yaml"], TINY + "mode: maximise\n", "mode must be max or min"),
    "a bad budget": (["phase1", "--space", "space.yaml"], TINY + "budget: {hours: 2}\n", "budget.hours"),
    "a bad scheduler option": (["phase1", "--space", "space.yaml"], TINY + "scheduler: {kind: median, rf: 2}\n",
                               "scheduler.rf"),
    "bad --budget-epochs": (["phase1", "--space", "space.yaml", "--budget-epochs", "0"], TINY, "--budget-epochs"),
    "bad --optuna-storage": (["phase1", "--space", "space.yaml", "--optuna-storage", "nowhere/optuna.log"], TINY,
                             "--optuna-storage"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_before_ray_starts(in_tmp, monkeypatch, capsys, case):
    import ray

    args, space, named = CASES[case]
    write_space(in_tmp, "space.yaml", space)
    code, out = invoke(monkeypatch, capsys, *args)
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, out.err
    assert named in lines[0] and "fix:" in lines[0] and "Traceback" not in out.err
    assert not ray.is_initialized() and not (in_tmp / "results").exists() and out.out == ""


def test_a_phase_that_exists_needs_resume(in_tmp, monkeypatch, capsys):
    write_space(in_tmp, "space.yaml", TINY)
    (in_tmp / "results" / "default" / "phase1").mkdir(parents=True)
    code, out = invoke(monkeypatch, capsys, "phase1", "--space", "space.yaml")
    assert code == 2 and "exists already" in out.err and "--resume" in out.err


def test_console_script_exits_2_in_a_fresh_process(tmp_path):
    write_space(tmp_path, "space.yaml", "params:\n  loss.name: {choice: [sogclr, isogclr]}\n"
                                        "  loss.eta: {uniform: [0.01, 0.1]}\n")
    out = run_cli("phase1", "--space", "space.yaml", cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "params.loss.eta" in out.stderr and "when: {loss.name: [isogclr, isogclr_v2]}" in out.stderr
    assert not (tmp_path / "results").exists()


def test_help_explains_the_phase_options(tmp_path):
    out = run_cli("phase1", "--help", cwd=tmp_path)
    assert out.returncode == 0
    for option in ("--name", "--quick", "--resume", "--space", "--address", "--tracking-uri", "--storage",
                   "--gpus-per-trial", "--cpus-per-trial", "--num-samples", "--seed", "--max-failures",
                   "--optuna-storage", "--budget-minutes", "--budget-epochs"):
        assert option in out.stdout
