"""Phases 2 and 3 on a real (tiny) Ray cluster, from phase 1 results laid down by the test:
phase 2's grid is exactly phase 1's top picks; a trial that raises is retried from its
checkpoint and then marked errored, a trial whose loss turns NaN is retried and errored, and
the phase completes; phase 3 starts from phase 2's best; a phase whose trials all error exits 1.

One command runs both: `clipsearch protocol --resume`, which keeps the finished phase 1 and
runs phases 2 and 3 in one Ray session. Faults are injected from outside the trainable: the
command's environment installs clipsearch.bench.faults as the trials' epoch hook
(CLIPSEARCH_TRIAL_HOOK, with the rules in CLIPSEARCH_FAULTS), which the local Ray cluster started
by the command inherits: radam trials fail after epoch 1 (phase 2), every 1-epoch trial fails
(phase 3). The NaN is real: momentum SGD at lr 1e8 diverges within epoch 1.
"""

import json
from pathlib import Path

import pytest

from clipsearch.bench.faults import fault_env
from clipsearch.results import TrialRecord, rank_trials, read_trials_csv, trial_rows, write_json, write_trials_csv

from .helpers import mlflow_runs, run_cli, write_space

pytestmark = pytest.mark.slow

PHASE1 = [  # (optimizer, optimizer params, loss params, objective): ranked by objective
    ("adamw", {"optimizer.lr": 2e-3}, {"loss.name": "sogclr", "loss.gamma": 0.9}, 9.0),
    ("radam", {"optimizer.lr": 3e-3}, {"loss.name": "isogclr", "loss.eta": 0.02}, 8.0),
    ("adamw", {"optimizer.lr": 9e-3}, {"loss.name": "sogclr", "loss.gamma": 0.6}, 7.0),
    ("momentum", {"optimizer.lr": 1e8, "optimizer.momentum": 0.9}, {"loss.name": "sogclr", "loss.gamma": 0.5}, 6.0),
    ("rmsprop", {"optimizer.lr": 1e-4, "optimizer.momentum": 0.8}, {"loss.name": "sogclr", "loss.gamma": 0.7}, 5.0),
]
SEARCHED = ["loss.eta", "loss.gamma", "loss.name", "optimizer.lr", "optimizer.momentum", "optimizer.name"]

PHASE2_SPACE = """base: quick
top_optimizers: 3
max_concurrent: 2
params:
  loss.name: {grid: [sogclr]}
  data.fraction: 0.1
  train.epochs: 2
"""
PHASE3_SPACE = """base: quick
num_samples: 1
max_concurrent: 1
params:
  optimizer.lr: {loguniform: [0.5, 2.0], relative: true}
  loss.gamma: {uniform: [0.5, 1.0], when: {loss.name: [sogclr, isogclr, isogclr_v2]}}
  data.fraction: 0.05
  train.epochs: 1
"""


def lay_down_phase1(results):
    """results/exp/phase1 as phase 1 writes it, with a known ranking."""
    records = [TrialRecord(f"p1_{i}", "TERMINATED", {"optimizer.name": name, **opt, **loss, "train.epochs": 4},
                           [{"epoch": 1, "objective": score - 1}, {"epoch": 2, "objective": score}])
               for i, (name, opt, loss, score) in enumerate(PHASE1)]
    folder = results / "exp" / "phase1"
    write_trials_csv(folder / "trials.csv", trial_rows(records, rank_trials(records, "objective"), "objective", 2))
    write_json(folder / "best.json", {"trial_id": "p1_0", "searched": SEARCHED, "config": records[0].config})
    write_json(folder / "phase.json", {"phase": "phase1", "finished": True})


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    root = tmp_path_factory.mktemp("phases")
    lay_down_phase1(root / "results")
    write_space(root / "spaces", "phase2.yaml", PHASE2_SPACE)
    write_space(root / "spaces", "phase3.yaml", PHASE3_SPACE)
    out = run_cli("protocol", "--resume", "--spaces", "spaces", "--name", "exp", "--max-failures", "1", cwd=root,
                  env=fault_env("optimizer.name=radam@1;train.epochs=1@0"))
    return root, out


@pytest.fixture
def phase2(protocol):
    return protocol


def by_optimizer(rows):
    return {row["config"]["optimizer.name"]: row for row in rows}


def test_phase2_grid_holds_exactly_phase1s_top_picks(phase2):
    root, out = phase2
    rows = by_optimizer(read_trials_csv(root / "results" / "exp" / "phase2" / "trials.csv"))
    assert set(rows) == {"adamw", "radam", "momentum"}  # the top 3 distinct optimizers, not rmsprop
    assert rows["adamw"]["config"]["optimizer.lr"] == 2e-3  # from adamw's best trial, not its second
    assert rows["radam"]["config"]["optimizer.lr"] == 3e-3
    assert rows["momentum"]["config"]["optimizer.momentum"] == 0.9
    for row in rows.values():  # the loss cell: sogclr as its best phase 1 trial ran it
        assert row["config"]["loss.name"] == "sogclr" and row["config"]["loss.gamma"] == 0.9
        assert row["config"]["train.epochs"] == 2  # phase 2's own constants, not phase 1's


def test_failing_trials_are_retried_then_errored_and_the_phase_completes(phase2):
    root, out = phase2
    rows = by_optimizer(read_trials_csv(root / "results" / "exp" / "phase2" / "trials.csv"))
    assert rows["adamw"]["status"] == "TERMINATED" and rows["adamw"]["rank"] == 1
    raised, nan = rows["radam"], rows["momentum"]
    assert raised["status"] == "ERROR" and "InjectedFault" in raised["error"]
    assert raised["num_failures"] == 2 and raised["epochs"] == 1  # first try + 1 retry (--max-failures 1)
    assert nan["status"] == "ERROR" and "NonFiniteLossError" in nan["error"] and nan["num_failures"] == 2
    best = json.loads((root / "results" / "exp" / "phase2" / "best.json").read_text())
    assert best["config"]["optimizer.name"] == "adamw" and best["errored"] == 2


def test_finished_trials_keep_only_their_best_model_errored_ones_their_state(phase2):
    root, _ = phase2
    best = json.loads((root / "results" / "exp" / "phase2" / "best.json").read_text())
    finished = Path(best["checkpoint"])
    assert (finished / "best" / "model.pt").is_file() and not (finished / "checkpoint").exists()
    errored = by_optimizer(read_trials_csv(root / "results" / "exp" / "phase2" / "trials.csv"))["radam"]
    states = list((root / "results" / "exp" / "phase2" / "ray").glob(f"trial_{errored['trial_id']}/checkpoint_*/checkpoint/state.pt"))
    assert len(states) == 1  # kept so that --resume can retry it


def test_a_retried_trial_went_on_from_its_checkpoint(phase2):
    """Had the retry started from scratch, epoch 1 would have been reported (and logged) twice."""
    root, _ = phase2
    from mlflow.tracking import MlflowClient

    runs = mlflow_runs(root / "results", "exp")
    radam = next(r for r in runs if r.data.params.get("optimizer.name") == "radam")
    history = MlflowClient(f"sqlite:///{root / 'results' / 'mlflow.db'}").get_metric_history(radam.info.run_id, "objective")
    assert [m.step for m in history] == [1]


def test_mlflow_holds_the_phase_and_its_trials(phase2):
    root, _ = phase2
    runs = mlflow_runs(root / "results", "exp")
    parents = [r for r in runs if r.info.run_name == "phase2"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.status for r in children) == ["FAILED", "FAILED", "FINISHED"]
    finished = next(r for r in children if r.info.status == "FINISHED")
    assert finished.data.params["optimizer.name"] == "adamw" and "objective" in finished.data.metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'results' / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"trials.csv", "best.json", "best"} <= artifacts
    assert [a.path for a in client.list_artifacts(parents[0].info.run_id, "best")] == ["best/model.pt"]


def test_protocol_kept_phase1_and_printed_phase2s_result(protocol):
    root, out = protocol
    assert "phase1: finished before, kept" in out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["phase"] == "phase2"


def test_every_phase_the_protocol_ran_ends_with_its_report(protocol):
    """The CLI's after_phase hook (report_after_run) ran after each phase, the failed one too."""
    root, _ = protocol
    exp = root / "results" / "exp"
    assert (exp / "phase2" / "report.html").is_file() and (exp / "phase3" / "report.html").is_file()
    assert not (exp / "phase1" / "report.html").exists()  # kept from before, not run again


def test_phase3_starts_from_phase2s_best_and_all_errors_exit_1(protocol):
    root, out = protocol
    assert out.returncode == 1, out.stderr[-3000:]
    assert "phase3: all 1 trials errored" in out.stderr.strip().splitlines()[-1]
    rows = read_trials_csv(root / "results" / "exp" / "phase3" / "trials.csv")
    assert len(rows) == 1 and rows[0]["status"] == "ERROR" and rows[0]["num_failures"] == 2
    config = rows[0]["config"]  # its first trial is phase 2's best itself: adamw at lr 2e-3, sogclr at gamma 0.9
    assert config["optimizer.name"] == "adamw" and config["loss.name"] == "sogclr"
    assert config["optimizer.lr"] == 2e-3 and config["loss.gamma"] == 0.9
    assert config["train.epochs"] == 1
    assert not (root / "results" / "exp" / "phase3" / "best.json").exists()
    phase3 = [r for r in mlflow_runs(root / "results", "exp") if r.info.run_name == "phase3"]
    assert [r.info.status for r in phase3] == ["FAILED"]
