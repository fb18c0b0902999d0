"""One registry type for losses, optimizers, schedulers and evaluators, and every default
declared once: in the registry entries' Params, which the config's defaults read."""

import inspect

import pytest

from clipsearch.config import OptimizerConfig
from clipsearch.errors import InputError
from clipsearch.hparams import COMMON_OPTIMIZER_PARAMS
from clipsearch.losses import LOSSES
from clipsearch.optim import OPTIMIZERS, SCHEDULERS
from clipsearch.registry import Registry
from clipsearch.tasks.image import EVALUATORS


@pytest.mark.parametrize("registry", [LOSSES, OPTIMIZERS, SCHEDULERS, EVALUATORS], ids=lambda r: r.kind)
def test_every_component_registry_is_one_type_and_refuses_an_unknown_name_naming_its_key(registry):
    assert isinstance(registry, Registry) and len(registry) >= 2
    with pytest.raises(InputError) as info:
        registry.get("nonesuch")
    message = str(info.value)
    assert registry.where in message and all(name in message for name in registry.names())


def test_the_configs_lr_and_weight_decay_defaults_are_the_optimizers_own():
    assert OptimizerConfig().lr == COMMON_OPTIMIZER_PARAMS["lr"].default
    assert OptimizerConfig().weight_decay == COMMON_OPTIMIZER_PARAMS["weight_decay"].default


@pytest.mark.parametrize("name", LOSSES.names())
def test_a_losss_hyperparameters_have_their_defaults_in_the_registry_only(name):
    info = LOSSES.get(name)
    signature = inspect.signature(info.cls.__init__)
    hyper = {k: p for k, p in signature.parameters.items() if k not in ("self", "num_samples")}
    assert set(hyper) == set(info.params)  # the class takes exactly the registry's knobs
    assert all(p.default is inspect.Parameter.empty for p in hyper.values())  # and declares no default of its own
