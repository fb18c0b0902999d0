"""Search-space files: every bad input is an InputError naming the file, the key and the fix;
good files give the trials Optuna draws, conditional parameters included. No Ray here."""

import math
from pathlib import Path

import optuna
import pytest

from clipsearch.errors import InputError
from clipsearch.tune.space import Base, OptunaSpace, default_space_path, load_space, resolve_relative

SHIPPED = Path(__file__).resolve().parents[2] / "search_spaces"


def write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("phase", ["phase1", "phase2", "phase3"])
@pytest.mark.parametrize("quick", [False, True])
def test_shipped_spaces_validate(phase, quick):
    space = load_space(default_space_path(phase, quick, SHIPPED), phase)
    assert space.metric == "objective" and space.num_samples >= 1


def test_full_scale_phase1_is_seed_001s_search():
    space = load_space(SHIPPED / "phase1.yaml", "phase1")
    params = {p.key: p for p in space.params}
    assert set(params["loss.name"].values) == {"sogclr", "isogclr", "isogclr_v2"}
    assert len(params["optimizer.name"].values) == 10
    assert space.constants["data.fraction"] == 0.2 and space.asha["max_t"] == 10
    assert space.base.config(space.constants, "x").model.image_tower == "timm:resnet50"


BAD = {
    "not YAML": ("params: [\n", "not valid YAML"),
    "unknown distribution": ("params:\n  optimizer.lr: {normal: [0, 1]}\n", "unknown distribution 'normal'"),
    "low > high": ("params:\n  optimizer.lr: {uniform: [0.1, 0.01]}\n", "low 0.1 > high 0.01"),
    "loguniform low <= 0": ("params:\n  optimizer.lr: {loguniform: [0, 0.01]}\n", "loguniform needs low > 0"),
    "when on an unknown parameter": (
        "params:\n  optimizer.name: {choice: [momentum, adamw]}\n"
        "  optimizer.momentum: {uniform: [0.8, 0.9], when: {optimizer.nam: [momentum]}}\n",
        "'optimizer.nam' is not a parameter"),
    "when on an impossible value": (
        "params:\n  optimizer.name: {choice: [momentum, adamw]}\n"
        "  optimizer.momentum: {uniform: [0.8, 0.9], when: {optimizer.name: [momentun]}}\n", "can never be 'momentun'"),
    "empty choice": ("params:\n  optimizer.name: {choice: []}\n", "non-empty list"),
    "unknown config key": ("params:\n  train.nope: 3\n", "config key 'train.nope' does not exist"),
    "unknown section": ("params:\n  trian.epochs: 3\n", "config key 'trian.epochs' does not exist"),
    "unknown component param": ("params:\n  loss.bogus: {uniform: [0, 1]}\n", "config key 'loss.bogus' does not exist"),
    "wrong type": ("params:\n  train.epochs: four\n", "train.epochs"),
    "out of a component's range": ("params:\n  loss.name: sogclr\n  loss.gamma: {uniform: [0.5, 1.5]}\n", "gamma=1.5"),
    "unknown optimizer": ("params:\n  optimizer.name: {choice: [adamw, adamx]}\n", "unknown optimizer 'adamx'"),
    "two distributions": ("params:\n  optimizer.lr: {uniform: [0.1, 0.2], loguniform: [0.1, 0.2]}\n", "exactly one"),
    "int with float bounds": ("params:\n  train.epochs: {int: [1, 2.5]}\n", "whole-number bounds"),
    "a bare list": ("params:\n  optimizer.name: [adam, adamw]\n", "a list is not a parameter"),
    "unknown top-level key": ("parms: {}\n", "unknown key 'parms'"),
    "unknown metric": ("metric: loss\n", "metric 'loss'"),
    "missing base": ("base: nope.yaml\n", "base config 'nope.yaml' not found"),
    "num_samples 0": ("num_samples: 0\n", "num_samples must be a whole number >= 1"),
    "grid in a Bayesian phase": ("params:\n  optimizer.lr: {grid: [0.1, 0.2]}\n", "grid is for phase 2"),
    "relative in phase 1": ("params:\n  optimizer.lr: {loguniform: [0.5, 2], relative: true}\n", "relative bounds"),
    "searched max_t": ("asha: {grace_period: 1}\nparams:\n  train.epochs: {int: [2, 4]}\n", "ASHA needs one max_t"),
    "grace beyond max_t": ("asha: {grace_period: 9}\nparams:\n  train.epochs: 4\n", "grace_period 9 exceeds"),
    "cyclic conditions": (
        "params:\n  optimizer.name: {choice: [adamw, momentum], when: {loss.name: [sogclr]}}\n"
        "  loss.name: {choice: [sogclr, isogclr], when: {optimizer.name: [adamw]}}\n", "cycle"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_space_is_one_input_error_naming_file_key_and_fix(tmp_path, case):
    text, message = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_space(path, "phase1")
    line = str(info.value)
    assert message in line and str(path) in line and "fix:" in line and "\n" not in line


def test_loss_param_for_a_loss_that_does_not_take_it_must_be_conditional(tmp_path):
    path = write(tmp_path, "params:\n  loss.name: {choice: [sogclr, isogclr, isogclr_v2]}\n"
                           "  loss.eta: {uniform: [0.01, 0.1]}\n")
    with pytest.raises(InputError) as info:
        load_space(path, "phase1")
    assert "params.loss.eta" in str(info.value)
    assert "when: {loss.name: [isogclr, isogclr_v2]}" in info.value.fix
    conditional = write(tmp_path, "params:\n  loss.name: {choice: [sogclr, isogclr, isogclr_v2]}\n"
                                  "  loss.eta: {uniform: [0.01, 0.1], when: {loss.name: [isogclr, isogclr_v2]}}\n",
                        name="ok.yaml")
    assert load_space(conditional, "phase1").params


@pytest.mark.parametrize("phase, text, message", [
    ("phase2", "params:\n  optimizer.lr: {uniform: [0.1, 0.2]}\n", "phase2 is a grid search"),
    ("phase2", "params:\n  optimizer.name: {grid: [adamw]}\n", "set by phase2 from the previous phase"),
    ("phase3", "params:\n  loss.name: sogclr\n", "set by phase3 from the previous phase"),
    ("phase3", "params:\n  train.epochs: {int: [1, 3], relative: true}\n", "relative works with uniform"),
    ("phase2", "asha: {grace_period: 1}\n", "`asha` belongs in a phase1 space"),
])
def test_phase_specific_rules(tmp_path, phase, text, message):
    with pytest.raises(InputError, match=message):
        load_space(write(tmp_path, text), phase)


def test_command_line_constants_override_the_file_and_may_not_hit_a_searched_key(tmp_path):
    path = write(tmp_path, "params:\n  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n  train.epochs: 3\n")
    assert load_space(path, "phase1", {"train.epochs": 2}).constants["train.epochs"] == 2
    with pytest.raises(InputError, match="searched"):
        load_space(path, "phase1", {"optimizer.lr": 0.1})
    with pytest.raises(InputError, match="does not exist"):
        load_space(path, "phase1", {"train.nope": 1})


def test_relative_data_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = load_space(write(tmp_path, "params:\n  data.source: pairs.csv\n"), "phase1")
    assert space.constants["data.source"] == str(tmp_path / "pairs.csv")


def draw(space, n=40, seed=0):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    sampler = OptunaSpace(space.params, space.constants)
    configs = []
    for _ in range(n):
        trial = study.ask()
        constants = sampler(trial)
        configs.append({**trial.params, **constants})
        study.tell(trial, 0.0)
    return configs


def test_define_by_run_draws_conditional_parameters_only_where_they_apply():
    space = load_space(default_space_path("phase1", True, SHIPPED), "phase1")
    configs = draw(space)
    for config in configs:
        has_momentum = "optimizer.momentum" in config
        assert has_momentum == (config["optimizer.name"] in ("momentum", "rmsprop"))
        assert ("loss.eta" in config) == (config["loss.name"] in ("isogclr", "isogclr_v2"))
        assert 3e-4 <= config["optimizer.lr"] <= 1e-2 and config["train.epochs"] == space.constants["train.epochs"]
        space.base.config(config, "drawn")  # every drawn trial is a valid config
    assert any("optimizer.momentum" in c for c in configs) and any("loss.eta" in c for c in configs)


def test_a_trial_switching_component_drops_the_base_components_params():
    base = Base({"loss": {"name": "clip", "temperature": 0.05}})
    cfg = base.config({"loss.name": "isogclr", "loss.eta": 0.02}, "trial")
    assert cfg.loss.name == "isogclr" and cfg.loss.params == {"eta": 0.02}


def test_phase3_ranges_are_centred_on_phase2s_values_and_drop_other_losses_knobs():
    space = load_space(default_space_path("phase3", True, SHIPPED), "phase3")
    carried = {"loss.name": "sogclr", "optimizer.name": "radam", "optimizer.lr": 1e-3, "optimizer.weight_decay": 0.02}
    resolved = resolve_relative(space, carried)
    params = {p.key: p for p in resolved.params}
    assert params["optimizer.lr"].values == pytest.approx((0.5e-3, 2e-3))
    assert params["optimizer.weight_decay"].values == pytest.approx((0.006, 0.06))
    assert "loss.tau_init" not in params and "loss.temperature" in params  # sogclr has no tau_init
    drawn = draw(resolved, n=10)
    sampler = OptunaSpace(resolved.params, {**carried, **resolved.constants})
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    constants = sampler(trial)
    config = {**trial.params, **constants}
    assert config["optimizer.name"] == "radam" and config["loss.name"] == "sogclr"
    assert config["optimizer.lr"] == trial.params["optimizer.lr"]  # drawn, not the carried 1e-3
    assert all(0.5e-3 <= c["optimizer.lr"] <= 2e-3 for c in drawn)


def test_relative_range_is_clipped_to_the_parameters_valid_range(tmp_path):
    path = write(tmp_path, "params:\n  loss.gamma: {uniform: [0.5, 2.0], relative: true, "
                           "when: {loss.name: [sogclr, isogclr, isogclr_v2]}}\n")
    space = load_space(path, "phase3")
    resolved = resolve_relative(space, {"loss.name": "sogclr", "optimizer.name": "adamw", "loss.gamma": 0.9})
    low, high = resolved.params[0].values
    assert math.isclose(low, 0.45) and high == 1.0


def test_fewer_epochs_on_the_command_line_move_ashas_first_rung_and_say_so(capsys):
    """--set train.epochs=1 on the quick phase 1 (a smoke test) runs, its rung at epoch 1; the
    same grace period against the file's own epochs stays an error."""
    space = load_space(default_space_path("phase1", True, SHIPPED), "phase1", {"train.epochs": 1})
    assert space.asha["grace_period"] == 1 and space.asha["max_t"] == 1
    assert "asha.grace_period" in capsys.readouterr().err
