"""`clipsearch confirm`: bad input is one line, exit 2, nothing started or written; a confirm's
plans rerun the phase's top distinct configurations with new seeds on the phase's budget, one
grid phase per configuration; the verdict is read from their trials."""

import json
import sys
from pathlib import Path

import pytest

from clipsearch import cli
from clipsearch.results import TrialRecord, rank_trials, trial_rows, write_json, write_trials_csv
from clipsearch.tune.confirm import Confirm, judge, prepare_confirm, top_configurations
from clipsearch.tune.phases import Options
from clipsearch.tune.space import _load_base

CONSTANTS = {"data.fraction": 0.05, "train.epochs": 1, "seed": 7, "train.threads": 1}
TRIALS = [  # (optimizer.lr, loss.name, objective, status)
    (2e-3, "sogclr", 9.0, "TERMINATED"),
    (3e-3, "isogclr", 8.0, "TERMINATED"),
    (2e-3, "sogclr", 7.5, "TERMINATED"),  # phase 2's --num-samples repeats: the same configuration again
    (9e-3, "sogclr", 7.0, "TERMINATED"),
    (1e-2, "sogclr", None, "ERROR"),
]


def lay_down_phase(exp_dir: Path, finished: bool = True) -> Path:
    """exp_dir/phase1 as a finished phase leaves it: trials.csv, best.json, phase.json."""
    records = [TrialRecord(f"t{i}", status, {"optimizer.lr": lr, "loss.name": loss, **CONSTANTS},
                           [{"epoch": 1, "objective": score}] if score is not None else [])
               for i, (lr, loss, score, status) in enumerate(TRIALS)]
    folder = exp_dir / "phase1"
    write_trials_csv(folder / "trials.csv", trial_rows(records, rank_trials(records, "objective"), "objective", 1))
    write_json(folder / "best.json", {"trial_id": "t0"})
    base = _load_base("quick", folder / "space.yaml", "space.yaml")
    write_json(folder / "phase.json", {
        "phase": "phase1", "experiment": exp_dir.name, "space": str(folder / "space.yaml"), "metric": "objective",
        "max_concurrent": 2, "base": base.to_json(), "constants": CONSTANTS, "seed": 7, "finished": finished,
        "tracking_uri": f"sqlite:///{exp_dir.parent / 'mlflow.db'}"})
    return folder


def invoke(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["clipsearch", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr()


CASES = {  # args after `confirm`, whether phase 1 is laid down (and finished), what the line names
    "no such experiment": (["results/nope"], None, "no such experiment"),
    "no finished phase": (["results/exp"], False, "no finished phase"),
    "more configurations than ranked": (["results/exp", "--top", "4"], True, "ranked 3 distinct configuration(s)"),
    "one seed": (["results/exp", "--seeds", "1"], True, "--seeds"),
    "no configuration": (["results/exp", "--top", "0"], True, "--top"),
    "resume of nothing": (["results/exp", "--resume"], True, "no confirm to resume"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_before_anything_starts(in_tmp, monkeypatch, capsys, case):
    import ray

    args, laid_down, named = CASES[case]
    if laid_down is not None:
        lay_down_phase(in_tmp / "results" / "exp", finished=laid_down)
    before = sorted(p.relative_to(in_tmp) for p in in_tmp.rglob("*"))
    code, out = invoke(monkeypatch, capsys, "confirm", *args)
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, out.err
    assert named in lines[0] and "fix:" in lines[0] and out.out == ""
    assert not ray.is_initialized() and sorted(p.relative_to(in_tmp) for p in in_tmp.rglob("*")) == before


@pytest.mark.census("two drivers")
@pytest.mark.parametrize("given", ["results/exp", "results/exp/phase1"])
def test_a_confirm_while_a_driver_holds_the_experiment_is_one_line_and_touches_nothing(in_tmp, monkeypatch, capsys,
                                                                                       given):
    import ray

    from clipsearch.tune.driver_lock import ExperimentLock

    lay_down_phase(in_tmp / "results" / "exp")
    running = ExperimentLock(in_tmp / "results" / "exp")
    running.take()  # another driver's lock: flock holds per open file, so this process's own conflicts
    try:
        before = sorted(p.relative_to(in_tmp) for p in in_tmp.rglob("*"))
        code, out = invoke(monkeypatch, capsys, "confirm", given)
    finally:
        running.release()
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "another clipsearch driver is running experiment 'exp'" in lines[0]
    assert not ray.is_initialized() and sorted(p.relative_to(in_tmp) for p in in_tmp.rglob("*")) == before


def test_a_confirm_that_exists_needs_resume(in_tmp, monkeypatch, capsys):
    lay_down_phase(in_tmp / "results" / "exp")
    (in_tmp / "results" / "exp" / "confirm").mkdir()
    code, out = invoke(monkeypatch, capsys, "confirm", "results/exp")
    assert code == 2 and "has a confirm already" in out.err and "--resume" in out.err


def test_the_top_distinct_configurations_are_the_ranked_ones_best_first(tmp_path):
    folder = lay_down_phase(tmp_path / "exp")
    configs = top_configurations(folder, json.loads((folder / "phase.json").read_text()))
    assert [c["trial_id"] for c in configs] == ["t0", "t1", "t3"]  # t2 repeats t0, t4 errored
    assert configs[0]["config"] == {"optimizer.lr": 2e-3, "loss.name": "sogclr", "data.fraction": 0.05,
                                    "train.epochs": 1}  # its seed and threads are the confirm's
    assert configs[0]["decided"] == {"optimizer.lr": 2e-3, "loss.name": "sogclr"} and configs[0]["phase_score"] == 9.0


def test_each_configuration_is_a_grid_over_new_seeds_on_the_phases_budget(tmp_path):
    exp = tmp_path / "results" / "exp"
    lay_down_phase(exp)
    confirm = prepare_confirm(exp, 2, 3, Options(cpus_per_trial=2))
    assert confirm.request["seeds"] == [8, 9, 10]  # the phase's seed 7 is left out: it was picked as the best
    assert [p.phase_dir for p in confirm.plans] == [exp / "confirm" / "top1", exp / "confirm" / "top2"]
    first = confirm.plans[0].state
    assert first["phase"] == "confirm-top1" and first["grid"] == {"carried": {}, "axes": {"seed": [8, 9, 10]}}
    assert first["constants"]["optimizer.lr"] == 2e-3 and first["constants"]["train.epochs"] == 1
    assert first["constants"]["data.fraction"] == 0.05 and first["constants"]["train.threads"] == 2
    assert first["max_concurrent"] == 2 and first["confirm"]["trial_id"] == "t0" and "asha" not in first
    assert first["tracking_uri"] == f"sqlite:///{exp.parent / 'mlflow.db'}"  # the phase's own store
    assert confirm.plans[1].state["constants"]["loss.name"] == "isogclr"
    assert not (exp / "confirm").exists()  # prepared, nothing written


def test_the_verdict_is_read_from_each_configurations_trials(tmp_path):
    exp = tmp_path / "results" / "exp"
    lay_down_phase(exp)
    confirm = prepare_confirm(exp, 2, 3, Options())
    for plan, values in zip(confirm.plans, ([10.0, 10.5, 11.0], [8.0, 8.5, None])):
        records = [TrialRecord(f"s{seed}", "TERMINATED" if v is not None else "ERROR", {"seed": seed},
                               [{"epoch": 1, "objective": v}] if v is not None else [])
                   for seed, v in zip(confirm.request["seeds"], values)]
        write_trials_csv(plan.phase_dir / "trials.csv", trial_rows(records, rank_trials(records, "objective"),
                                                                   "objective", 1))
    document = judge(Confirm(confirm.root, confirm.request, confirm.plans))
    first, second = document["configs"]
    assert first["seeds"] == {"8": 10.0, "9": 10.5, "10": 11.0} and first["mean"] == pytest.approx(10.5)
    assert second["seeds"]["10"] is None and second["n"] == 2 and second["mean"] == pytest.approx(8.25)
    assert document["verdict"]["winner"] == 0 and document["verdict"]["clear"] is True
    assert document["epochs"] == 1 and document["phase"] == "phase1"
