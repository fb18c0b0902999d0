"""`points:` in a space file: known-good configurations the Optuna study runs first. Each is
checked like the params (one InputError naming the point and its key); the first file point is
phase 1's first trial, and phase 3's second, after phase 2's best. The searcher is driven as Tune
drives it (suggest), no Ray cluster."""

import pytest

from clipsearch.errors import InputError
from clipsearch.tune.phases import Options, prepare
from clipsearch.tune.runner import _optuna_search
from clipsearch.tune.space import load_space

from .helpers import space_error_line
from .test_budget_and_incumbent import CARRIED, lay_down_phase2, ran_with
from .test_space import SHIPPED, write

PHASE1 = """base: quick
num_samples: 4
params:
  loss.name: {choice: [sogclr, isogclr]}
  optimizer.name: {choice: [adamw, momentum]}
  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
  optimizer.momentum: {uniform: [0.8, 0.99], when: {optimizer.name: [momentum]}}
  train.epochs: 2
"""

BAD = {  # case: (the points block, the key named, the message)
    "not a list": ("points: {optimizer.lr: 1.0e-3}", "points", "must be a list"),
    "not a mapping": ("points: [adamw]", "points[1]", "a point is a mapping"),
    "not searched": ("points: [{optimizer.eps: 1.0e-8}]", "points[1].optimizer.eps", "not a searched param"),
    "a constant": ("points: [{train.epochs: 3}]", "points[1].train.epochs", "a constant of the space"),
    "outside a range": ("points: [{optimizer.lr: 0.5}]", "points[1].optimizer.lr", "outside its distribution"),
    "not a choice": ("points: [{loss.name: clip}]", "points[1].loss.name", "outside its distribution"),
    "condition unsaid": ("points: [{optimizer.momentum: 0.9}]", "points[1].optimizer.momentum",
                         "the point must say which optimizer.name"),
    "condition false": ("points: [{optimizer.name: adamw, optimizer.momentum: 0.9}]", "points[1].optimizer.momentum",
                        "exists only when optimizer.name is one of ['momentum']"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_point_is_one_input_error_naming_the_point_and_key(tmp_path, case):
    block, key, message = BAD[case]
    path = write(tmp_path, PHASE1 + block + "\n")
    line = space_error_line(path, "phase1")
    assert f"{path}: {key}:" in line and message in line


def test_points_keep_their_order_and_come_as_their_params_draw_them(tmp_path):
    path = write(tmp_path, PHASE1 + "points:\n  - {optimizer.name: momentum, optimizer.momentum: 0.9, optimizer.lr: 1}"
                                    "\n  - {loss.name: isogclr}\n".replace("optimizer.lr: 1}", "optimizer.lr: 0.001}"))
    space = load_space(path, "phase1")
    assert space.points == [{"optimizer.name": "momentum", "optimizer.momentum": 0.9, "optimizer.lr": 0.001},
                            {"loss.name": "isogclr"}]


def test_a_grid_phase_takes_no_points(tmp_path):
    path = write(tmp_path, "params:\n  loss.name: {grid: [sogclr]}\npoints: [{loss.name: sogclr}]\n")
    with pytest.raises(InputError, match="unknown key 'points' in a phase2 space"):
        load_space(path, "phase2")


def test_the_file_point_is_phase1s_first_trial_and_the_study_draws_the_rest(tmp_path):
    point = {"optimizer.name": "momentum", "optimizer.momentum": 0.95, "optimizer.lr": 0.003, "loss.name": "isogclr"}
    path = write(tmp_path, PHASE1 + "points:\n  - " + str(point).replace("'", "") + "\n")
    plan = prepare("phase1", Options(name="exp", space=path, results=tmp_path / "results"))
    assert plan.state["points"] == [point]
    plan.phase_dir.mkdir(parents=True)  # as execute does, before the study is opened
    search = _optuna_search(plan)
    first, second = search.suggest("t1"), search.suggest("t2")
    assert {k: first[k] for k in point} == point
    assert {k: second.get(k) for k in point} != point


def test_phase3_runs_phase2s_best_first_then_the_files_points(tmp_path, capsys):
    results = tmp_path / "results"
    lay_down_phase2(results, CARRIED)
    text = (SHIPPED / "phase3_quick.yaml").read_text(encoding="utf-8")
    # lr 1.5e-3 lies in x[0.5, 2] of phase 2's 1e-3; 0.5 does not: drawn instead, with a warning
    text += "points:\n  - {optimizer.lr: 1.5e-3, model.embed_dim: 128}\n  - {optimizer.lr: 0.5, scheduler.name: tanh}\n"
    path = write(tmp_path, text)
    plan = prepare("phase3", Options(name="exp", space=path, results=results))
    incumbent, *from_file = plan.state["points"]
    assert from_file == [{"optimizer.lr": 1.5e-3, "model.embed_dim": 128}, {"scheduler.name": "tanh"}]
    assert "point 2's optimizer.lr=0.5 is outside its range" in capsys.readouterr().err
    plan.phase_dir.mkdir(parents=True)
    search = _optuna_search(plan)
    first, second, third = (search.suggest(f"t{i}") for i in range(3))
    space = load_space(path, "phase3")
    assert ran_with(space, first) == ran_with(space, {**CARRIED, **plan.state["constants"]})  # phase 2's best
    assert second["optimizer.lr"] == 1.5e-3 and second["model.embed_dim"] == 128
    assert third["scheduler.name"] == "tanh"


def test_a_point_for_a_knob_phase2s_loss_does_not_have_is_left_out_with_a_warning(tmp_path, capsys):
    results = tmp_path / "results"
    lay_down_phase2(results, CARRIED)  # phase 2's best ran sogclr: loss.tau_init (isogclr's) left the space
    text = (SHIPPED / "phase3_quick.yaml").read_text(encoding="utf-8")
    path = write(tmp_path, text + "points:\n  - {loss.tau_init: 0.05, model.embed_dim: 64}\n")
    plan = prepare("phase3", Options(name="exp", space=path, results=results))
    assert plan.state["points"][1:] == [{"model.embed_dim": 64}]
    assert "point 1's loss.tau_init does not apply to these trials" in capsys.readouterr().err
