"""--resume of a finished phase with a larger --num-samples extends it: a new Tune run (ray-2/)
whose searcher loads the phase's Optuna study, so it draws on knowing every earlier trial and
enqueues nothing again; its trials.csv and best.json cover both runs. A smaller or equal
--num-samples keeps the phase, in one line; a grid, or a phase from before phase.json kept its
params, cannot be extended (one line, exit 2). The slow test extends a real quick phase 1."""

import json

import optuna
import pytest

from clipsearch.errors import InputError
from clipsearch.results import (TrialRecord, best_summary, rank_trials, read_trials_csv, trial_rows, write_json,
                                write_trials_csv)
from clipsearch.tune.phases import Options, prepare, run_or_keep
from clipsearch.tune.runner import _optuna_search, _points, _search_seed, run_samples

from .helpers import run_cli, write_space
from .test_space import write

SPACE = """base: quick
num_samples: 2
max_concurrent: 1
scheduler: {kind: none}
sampler: {kind: random}
params:
  optimizer.name: {choice: [adam, adamw]}
  loss.name: {choice: [sogclr, isogclr]}
  data.fraction: 0.05
  train.epochs: 1
points:
  - {optimizer.name: adamw, loss.name: sogclr}
"""


def finished_phase(tmp_path, trials=(("adamw", "sogclr"), ("adam", "isogclr")), **state):
    """results/exp/phase1 as a finished phase 1 of SPACE leaves it: phase.json, trials.csv,
    best.json, and its trials in the experiment's Optuna study."""
    results = tmp_path / "results"
    plan = prepare("phase1", Options(name="exp", space=write(tmp_path, SPACE), results=results))
    plan.phase_dir.mkdir(parents=True)
    search = _optuna_search(plan)
    records = []
    for i, _ in enumerate(trials):
        config = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", {"objective": 3.0 + i, "epoch": 1, "training_iteration": 1})
        records.append(TrialRecord(f"t{i}", "TERMINATED", config, [{"epoch": 1, "objective": 3.0 + i}]))
    write_trials_csv(plan.phase_dir / "trials.csv", trial_rows(records, rank_trials(records, "objective"), "objective", 1))
    write_json(plan.phase_dir / "best.json", best_summary("phase1", "exp", "objective", records, ["optimizer.name"]))
    write_json(plan.phase_dir / "phase.json", {**plan.state, "finished": True, **state})
    return results, plan.phase_dir


def resume(results, num_samples=None, **options):
    return prepare("phase1", Options(name="exp", resume=True, results=results, num_samples=num_samples, **options))


@pytest.mark.parametrize("num_samples", [None, 1, 2])
def test_a_finished_phase_is_kept_in_one_line_without_more_samples(tmp_path, capsys, num_samples):
    results, _ = finished_phase(tmp_path)
    plan = resume(results, num_samples)
    outcome = run_or_keep(plan)
    assert plan.resume and outcome.trials == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "phase1: finished before, kept (2 trials; --resume --num-samples N with N > 2 adds trials)")


def test_more_samples_extend_it_in_a_new_tune_run_over_the_same_study(tmp_path, capsys):
    results, phase_dir = finished_phase(tmp_path)
    plan = resume(results, num_samples=4)
    state = plan.state
    assert not plan.resume and state["run"] == 2 and state["finished"] is False
    assert state["experiment_path"].endswith("/phase1/ray-2") and state["earlier_runs"][0].endswith("/phase1/ray")
    assert (state["num_samples"], state["trials_before"], run_samples(state)) == (4, 2, 2)
    assert _points(state) == [] and _search_seed(state) == state["search_seed"] + 1  # nothing enqueued again
    assert "extending it to 4 (2 more)" in capsys.readouterr().err
    search = _optuna_search(plan)
    drawn = [search.suggest(f"x{i}") for i in range(2)]
    earlier = [row["config"] for row in read_trials_csv(phase_dir / "trials.csv")]
    combos = [(c["optimizer.name"], c["loss.name"]) for c in [*earlier, *drawn]]
    assert sorted(combos) == sorted({("adam", "sogclr"), ("adam", "isogclr"), ("adamw", "sogclr"),
                                     ("adamw", "isogclr")})  # the two left, none repeated
    study = optuna.load_study(study_name="exp-phase1", storage=state["optuna_storage"])
    assert len(study.trials) >= 4  # the same study: the first run's trials and the new draws


def test_a_grid_or_a_phase_without_its_params_cannot_be_extended(tmp_path):
    results, phase_dir = finished_phase(tmp_path)
    state = json.loads((phase_dir / "phase.json").read_text())
    write_json(phase_dir / "phase.json", {**state, "search": "grid", "grid": {"carried": {}, "axes": {}}})
    with pytest.raises(InputError, match="phase1 is a grid: every cell has run") as info:
        resume(results, num_samples=4)
    assert str(info.value).startswith("--num-samples: ")
    write_json(phase_dir / "phase.json", {k: v for k, v in state.items() if k != "params"})
    with pytest.raises(InputError, match="ran before clipsearch kept its params"):
        resume(results, num_samples=4)


def test_a_spent_epoch_budget_needs_a_larger_one_to_extend(tmp_path):
    results, _ = finished_phase(tmp_path, budget={"epochs": 0.1})  # 2 trials x 1 epoch x 0.05 = 0.1
    with pytest.raises(InputError, match=r"has spent its epoch budget \(0.1 of 0.1 full-data epochs\)"):
        resume(results, num_samples=4)
    assert resume(results, num_samples=4, budget_epochs=0.2).state["budget"]["epochs"] == 0.2


def test_an_extension_killed_before_its_first_snapshot_leaves_the_phase_as_before(tmp_path, capsys):
    results, phase_dir = finished_phase(tmp_path)
    extended = resume(results, num_samples=4).state
    write_json(phase_dir / "phase.json", extended)  # what execute writes first; then the driver dies
    plan = resume(results)
    assert plan.resume and plan.state["finished"] and "run" not in plan.state
    assert "its extension stopped before its first trial was recorded" in capsys.readouterr().err


@pytest.mark.slow
def test_an_extended_phase_ends_with_the_new_number_of_trials_none_repeated(tmp_path):
    write_space(tmp_path, "space.yaml", SPACE)
    first = run_cli("phase1", "--space", "space.yaml", "--name", "exp", cwd=tmp_path, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    more = run_cli("phase1", "--name", "exp", "--resume", "--num-samples", "4", cwd=tmp_path, timeout=900)
    assert more.returncode == 0, more.stderr[-3000:]
    phase = tmp_path / "results" / "exp" / "phase1"
    rows = read_trials_csv(phase / "trials.csv")
    combos = [(r["config"]["optimizer.name"], r["config"]["loss.name"]) for r in rows]
    assert len(rows) == 4 and len(set(combos)) == 4 and len({r["trial_id"] for r in rows}) == 4
    assert all(r["status"] == "TERMINATED" and r["rank"] for r in rows)
    best = json.loads((phase / "best.json").read_text())
    assert best["trials"] == 4 and json.loads(more.stdout)["trials"] == 4
    assert best["trial_id"] == next(r["trial_id"] for r in rows if r["rank"] == 1)
    assert (phase / "ray").is_dir() and (phase / "ray-2").is_dir()
    study = optuna.load_study(study_name="exp-phase1", storage=f"sqlite:///{tmp_path / 'results' / 'exp' / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted((t.params["optimizer.name"], t.params["loss.name"]) for t in complete) == sorted(combos)
    assert combos.count(("adamw", "sogclr")) == 1  # the file's point ran once, in the first run
