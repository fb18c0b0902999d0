"""A phase's budgets in wall time and in epochs: the space file's `budget:` block and the
command line's --budget-minutes / --budget-epochs, the epoch counter (each trial's epochs x its
data.fraction, the phase's history/ included) and the line a stopped phase prints. The slow tests
run a quick phase 1 to each budget."""

import json

import pytest

from clipsearch.errors import InputError
from clipsearch.results import TrialRecord, append_history, read_trials_csv
from clipsearch.tune.budget import EpochBudget, budget_line, budget_stop
from clipsearch.tune.phases import Options, prepare
from clipsearch.tune.space import load_space

from .helpers import run_cli, write_space
from .test_space import write

TINY = "base: quick\nnum_samples: 2\nparams:\n  optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}\n  train.epochs: 4\n"


@pytest.mark.parametrize("block, budget", [
    ("budget: {minutes: 1.5}", {"time_budget_s": 90.0}),
    ("budget: {time_budget_s: 30}", {"time_budget_s": 30.0}),
    ("budget: {epochs: 40, minutes: 2}", {"epochs": 40.0, "time_budget_s": 120.0}),
])
def test_the_budget_block_is_read_in_seconds_and_full_data_epochs(tmp_path, block, budget):
    assert load_space(write(tmp_path, TINY + block + "\n"), "phase1").budget == budget


@pytest.mark.parametrize("block, key, message", [
    ("budget: 30", "budget", "budget must be a mapping"),
    ("budget: {hours: 1}", "budget.hours", "unknown budget 'hours'"),
    ("budget: {epochs: 0}", "budget.epochs", "must be a number > 0"),
    ("budget: {minutes: 1, time_budget_s: 60}", "budget.time_budget_s", "the same budget"),
])
def test_a_bad_budget_is_one_input_error_naming_the_key(tmp_path, block, key, message):
    path = write(tmp_path, TINY + block + "\n")
    with pytest.raises(InputError) as info:
        load_space(path, "phase1")
    assert f"{path}: {key}: " in str(info.value) and message in str(info.value)


def test_the_command_line_budget_goes_over_the_files(tmp_path):
    path = write(tmp_path, TINY + "budget: {epochs: 40, minutes: 5}\n")
    plan = prepare("phase1", Options(name="exp", space=path, results=tmp_path / "results", budget_epochs=8))
    assert plan.state["budget"] == {"epochs": 8.0, "time_budget_s": 300.0}


def test_the_epoch_budget_counts_each_trials_epochs_times_its_data_fraction(tmp_path):
    append_history(tmp_path, "before", {"epoch": 1})  # a trial of the phase before a resume
    append_history(tmp_path, "before", {"epoch": 2})
    stopper = EpochBudget(3.0, tmp_path, fraction=0.5)
    assert not stopper("a", {"epoch": 1, "config": {"data.fraction": 0.5}}) and stopper.spent() == 1.5
    stopper("a", {"epoch": 1, "config": {"data.fraction": 0.5}})  # an epoch reported again counts once
    assert not stopper.stop_all()
    stopper("b", {"epoch": 3, "config": {"data": {"fraction": 0.25}}})  # a grid's nested config
    assert stopper.spent() == 1.0 + 0.5 + 0.75 and not stopper.stop_all()
    stopper("a", {"epoch": 3, "config": {"data.fraction": 0.5}})
    assert stopper.spent() == 1.0 + 1.5 + 0.75 and stopper.stop_all()


def test_which_budget_stopped_a_run_and_the_line_that_says_so():
    records = [TrialRecord(t, "TERMINATED", {"data.fraction": 0.5}, [{"epoch": e} for e in range(1, n + 1)])
               for t, n in (("a", 4), ("b", 2))]
    stop = budget_stop({"epochs": 3.0}, records, 1.0, run_seconds=10)
    assert stop == {"budget": "epochs", "spent": 3.0, "limit": 3.0}
    assert budget_line("phase1", stop, 2) == (
        "phase1: stopped by its epoch budget: 3 of 3 full-data epochs spent (each trial's epochs x its "
        "data.fraction); 2 trial(s) ran, those it cut end TERMINATED with the epochs they reached")
    assert budget_stop({"epochs": 4.0, "time_budget_s": 60}, records, 1.0, run_seconds=30) is None
    assert budget_stop({"time_budget_s": 60}, records, 1.0, run_seconds=61)["budget"] == "time"


# ------------------------------------------------------------------------------ real phases (slow)

# more trials than either budget lets run, on any machine: a fast one finished all of 12 trials
# inside a 45 s time budget, and the phase then ended without the budget's stop
QUICK = """base: quick
num_samples: 100
max_concurrent: 2
scheduler: {kind: none}
sampler: {kind: random}
params:
  optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}
  data.fraction: 0.05
  train.epochs: 2
"""


def budgeted_phase(tmp_path, *budget_options):
    write_space(tmp_path, "space.yaml", QUICK)
    out = run_cli("phase1", "--space", "space.yaml", "--name", "exp", *budget_options, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    phase = tmp_path / "results" / "exp" / "phase1"
    return out, read_trials_csv(phase / "trials.csv"), json.loads((phase / "phase.json").read_text())


@pytest.mark.slow
def test_an_epoch_budget_stops_the_phase_and_says_so(tmp_path):
    out, rows, state = budgeted_phase(tmp_path, "--budget-epochs", "0.3")  # 3 trials of 2 epochs on 5%
    spent = sum(row["epochs"] * 0.05 for row in rows)
    assert 0.3 <= spent < 0.3 + 2 * 0.05 * 2  # at most one more epoch of each of the 2 running trials
    assert len(rows) < 100 and all(row["status"] == "TERMINATED" and row["epochs"] >= 1 for row in rows)
    assert state["stopped_by"]["budget"] == "epochs" and state["finished"] is True
    assert [line for line in out.stderr.splitlines() if "stopped by its epoch budget" in line] == [
        f"phase1: stopped by its epoch budget: {state['stopped_by']['spent']:g} of 0.3 full-data epochs spent "
        f"(each trial's epochs x its data.fraction); {len(rows)} trial(s) ran, those it cut end TERMINATED with "
        f"the epochs they reached"]
    assert json.loads(out.stdout)["trials"] == len(rows)


@pytest.mark.slow
def test_a_time_budget_stops_the_phase_within_one_trial_of_it(tmp_path):
    out, rows, state = budgeted_phase(tmp_path, "--budget-minutes", "0.5")
    assert state["stopped_by"]["budget"] == "time" and "stopped by its time budget" in out.stderr
    longest = max(row["seconds"] for row in rows)
    assert 30 <= state["stopped_by"]["spent"] <= 30 + longest + 15  # the run, Ray's start-up included
    assert len(rows) < 100 and all(row["status"] == "TERMINATED" for row in rows)
