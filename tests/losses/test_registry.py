"""The loss registry: names, defaults, and the InputErrors a user sees for a bad loss config."""

from __future__ import annotations

import pytest

from clipsearch.errors import InputError
from clipsearch.losses import build_loss, list_losses, loss_info, resolve_loss_params

ALL_LOSSES = ["ce", "clip", "isogclr", "isogclr_v2", "ntxent", "sogclr", "supcon"]


def test_list_losses_names_all_seven():
    assert list_losses() == ALL_LOSSES


def test_unknown_loss_raises_input_error_listing_the_available_names():
    with pytest.raises(InputError) as error:
        build_loss("simclr")
    message = str(error.value)
    assert "'simclr'" in message and "loss.name" in message
    for name in ALL_LOSSES:
        assert name in message


@pytest.mark.parametrize("name, foreign", [("sogclr", "rho_I"), ("clip", "gamma"), ("isogclr", "lambda_"),
                                           ("supcon", "label_smoothing"), ("isogclr", "learnable_temp")])
def test_hyperparameter_of_another_loss_raises_input_error_naming_the_accepted_ones(name, foreign):
    with pytest.raises(InputError) as error:
        resolve_loss_params(name, {foreign: 1.0})
    assert f"loss.{foreign}" in str(error.value)
    for accepted in loss_info(name).params:
        assert accepted in str(error.value)


@pytest.mark.parametrize("name, params, key", [
    ("sogclr", {"gamma": 0.0}, "loss.gamma"),
    ("sogclr", {"gamma": 1.5}, "loss.gamma"),
    ("isogclr", {"gamma": 0.0}, "loss.gamma"),
    ("sogclr", {"temperature": -0.1}, "loss.temperature"),
    ("sogclr", {"temperature": 0.0}, "loss.temperature"),
    ("supcon", {"temperature": -1.0}, "loss.temperature"),
    ("isogclr", {"tau_init": 0.0}, "loss.tau_init"),
    ("isogclr", {"tau_min": 0.0}, "loss.tau_min"),
    ("isogclr", {"rho_I": -1.0}, "loss.rho_I"),
    ("isogclr", {"eta": -0.01}, "loss.eta"),
    ("isogclr", {"beta": 0.0}, "loss.beta"),
    ("isogclr", {"beta": 1.1}, "loss.beta"),
    ("isogclr_v2", {"lambda_": 0.0}, "loss.lambda_"),
    ("ce", {"label_smoothing": 1.0}, "loss.label_smoothing"),
    ("sogclr", {"gamma": "0.8"}, "loss.gamma"),
])
def test_out_of_range_hyperparameter_raises_input_error_naming_the_key(name, params, key):
    with pytest.raises(InputError, match=key.replace(".", r"\.")):
        build_loss(name, params, num_samples=10)


@pytest.mark.parametrize("name", ["isogclr", "isogclr_v2"])
@pytest.mark.parametrize("params, problem", [
    ({"tau_min": 0.05, "tau_max": 0.01, "tau_init": 0.02}, "tau_min=0.05 must be < tau_max=0.01"),
    ({"tau_min": 0.02, "tau_max": 0.02, "tau_init": 0.02}, "must be < tau_max"),
    ({"tau_min": 0.01, "tau_max": 0.05, "tau_init": 0.2}, "tau_init=0.2 must lie in"),
])
def test_inconsistent_temperature_range_raises_input_error(name, params, problem):
    with pytest.raises(InputError, match=problem):
        build_loss(name, params, num_samples=10)


@pytest.mark.parametrize("name, expected", [
    ("sogclr", {"gamma": 0.8, "temperature": 0.01, "eps": 1e-8}),
    ("isogclr", {"gamma": 0.8, "tau_init": 0.01, "tau_min": 0.005, "tau_max": 0.05, "rho_I": 8.0,
                 "rho_T": 8.0, "eta": 0.01, "beta": 0.9, "eps": 1e-8}),
    ("isogclr_v2", {"gamma": 0.8, "tau_init": 0.07, "tau_min": 0.005, "tau_max": 1.0, "rho_I": 6.0,
                    "rho_T": 6.0, "eta": 0.01, "beta": 0.9, "lambda_": 1.0, "eps": 1e-8}),
    ("supcon", {"temperature": 0.07}),
    ("ntxent", {"temperature": 0.1}),
    ("ce", {"label_smoothing": 0.0}),
])
def test_defaults_are_the_spec_defaults(name, expected):
    assert resolve_loss_params(name, {}) == expected


def test_given_hyperparameters_reach_the_module():
    loss_fn = build_loss("isogclr", {"eta": 0.003, "beta": 0.5, "rho_T": 2.0, "tau_init": 0.02}, num_samples=5)
    assert (loss_fn.eta, loss_fn.beta, loss_fn.rho["T"]) == (0.003, 0.5, 2.0)
    assert loss_fn.tau_I.tolist() == pytest.approx([0.02] * 5)


def test_global_loss_without_num_samples_raises_value_error():
    with pytest.raises(ValueError, match="num_samples"):
        build_loss("sogclr")
