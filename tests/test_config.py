"""Config loading: presets, YAML files, --set overrides, and every way a config can be wrong."""

import pytest

from clipsearch.config import load_config, parse_override
from clipsearch.errors import InputError


def test_quick_preset_is_valid_and_tiny():
    cfg = load_config(quick=True)
    assert cfg.data.source == "embedded"
    assert cfg.model.text_tower == "hf:minilm"
    assert cfg.train.epochs <= 10


def test_set_overrides_parse_numbers_and_reach_the_config():
    cfg = load_config(quick=True, overrides=["optimizer.lr=3e-4", "train.epochs=2", "data.augment=false"])
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.train.epochs == 2 and cfg.data.augment is False


@pytest.mark.parametrize("item, expected", [("a.b=1e-3", 1e-3), ("a.b=7", 7), ("a.b=adamw", "adamw"), ("a.b=true", True)])
def test_override_values_are_typed(item, expected):
    assert parse_override(item)[1] == expected


def test_switching_loss_drops_the_old_loss_params():
    # the quick preset sets clip's temperature; ce has no temperature, so carrying it over
    # would make a valid override fail
    cfg = load_config(quick=True, overrides=["loss.name=ce"])
    assert cfg.loss.name == "ce" and "temperature" not in cfg.loss.params


def test_yaml_file_merges_over_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 3\noptimizer:\n  lr: 0.01\n")
    cfg = load_config(path, quick=True)
    assert cfg.train.epochs == 3 and cfg.optimizer.lr == 0.01 and cfg.optimizer.name == "adamw"


@pytest.mark.parametrize("overrides, named", [
    (["train.epochz=3"], "train.epochz"),
    (["train.epochs=three"], "train.epochs"),
    (["train.batch_size=1"], "train.batch_size"),
    (["data.fraction=0"], "data.fraction"),
    (["loss.name=nope"], "loss.name"),
    (["optimizer.name=nope"], "optimizer.name"),
    (["loss.gamma=0.5"], "loss.gamma"),  # gamma is sogclr's, not clip's
    (["loss.temperature=-1"], "loss.temperature"),
    (["nosection.key=1"], "nosection"),
    (["train.epochs"], "--set"),
])
def test_bad_config_is_one_input_error_naming_the_key(overrides, named):
    with pytest.raises(InputError) as info:
        load_config(quick=True, overrides=overrides)
    line = info.value.one_line()
    assert named in line and "\n" not in line


def test_yaml_python_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(path, quick=True)


def test_missing_config_file_names_it(tmp_path):
    with pytest.raises(InputError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_config_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="mapping"):
        load_config(path)


def test_switching_component_takes_the_preset_defaults_for_the_new_one():
    cfg = load_config(quick=True, overrides=["loss.name=sogclr"])
    assert cfg.loss.params == {"temperature": 0.05}


def test_component_params_given_beside_the_name_land_on_it_in_any_order():
    cfg = load_config(quick=True, overrides=["loss.gamma=0.5", "loss.name=sogclr"])
    assert cfg.loss.params["gamma"] == 0.5 and cfg.loss.name == "sogclr"


def test_optimizer_switch_keeps_lr_and_weight_decay():
    cfg = load_config(quick=True, overrides=["optimizer.lr=0.01", "optimizer.name=momentum"])
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.weight_decay == load_config(quick=True).optimizer.weight_decay


def test_config_from_takes_flat_settings_over_a_preset():
    from clipsearch.config import config_from

    cfg = config_from("quick", {"loss.name": "isogclr", "loss.eta": 0.001, "train.epochs": 2})
    assert cfg.loss.params["eta"] == 0.001 and cfg.loss.params["tau_init"] == 0.05 and cfg.train.epochs == 2


def test_laying_settings_over_a_raw_config_leaves_the_raw_config_as_it_was():
    """A search's config check builds a trial config per corner of the space over one base: a
    setting must not leak into the base (it did for nested keys: phase 3's incumbent then got
    the last corner's model.embed_dim instead of phase 2's)."""
    import copy

    from clipsearch.config import apply_settings, read_base

    raw, defaults, _ = read_base("quick")
    before = copy.deepcopy(raw)
    apply_settings(raw, {"model.embed_dim": 128, "loss.name": "sogclr", "loss.gamma": 0.5}, defaults)
    assert raw == before
