"""What follows a phase is the caller's: the CLI hands every search the report as its
after_phase hook; tune carries the hook into each plan and never writes it to phase.json."""

import json
import sys

from clipsearch import cli
from clipsearch.report import report_after_run
from clipsearch.tune.phases import Options, prepare

from .helpers import write_space

TINY = "base: quick\nnum_samples: 2\nparams:\n  optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n  train.epochs: 1\n"


def test_every_search_command_ends_its_phases_with_the_report(monkeypatch, tmp_path):
    seen = {}

    def run_phase(phase, opts):
        seen[phase] = opts
        raise SystemExit(0)  # stop before Ray

    monkeypatch.setattr("clipsearch.tune.phases.run_phase", run_phase)
    monkeypatch.setattr(sys, "argv", ["clipsearch", "phase1", "--name", "exp"])
    try:
        cli.main()
    except SystemExit:
        pass
    assert seen["phase1"].after_phase is report_after_run


def test_a_plan_carries_the_hook_and_phase_json_never_holds_it(tmp_path):
    def report_it(phase_dir):
        raise AssertionError("prepare runs nothing")

    space = write_space(tmp_path, "space.yaml", TINY)
    plan = prepare("phase1", Options(name="exp", space=space, results=tmp_path / "results", after_phase=report_it))
    assert plan.after_phase is report_it
    json.dumps(plan.state)  # phase.json's content: plain JSON, no function in it
    assert "after_phase" not in plan.state
    assert prepare("phase1", Options(name="exp", space=space, results=tmp_path / "results")).after_phase is None
