"""Properties every registered loss must have: any batch >= 2 works, a batch of 1 is refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipsearch.losses import build_loss, list_losses

torch.set_num_threads(1)

NUM_SAMPLES = 40


def _pairs(batch, generator):
    image = F.normalize(torch.randn(batch, 8, generator=generator), dim=1)
    text = F.normalize(torch.randn(batch, 8, generator=generator), dim=1)
    return image, text


def _views(batch, generator):
    return torch.randn(batch, 2, 8, generator=generator)


#: name -> (batch, generator) -> (image_features, text_features, labels); the features are leaves
INPUTS = {
    "clip": lambda batch, gen: (*_pairs(batch, gen), None),
    "sogclr": lambda batch, gen: (*_pairs(batch, gen), None),
    "isogclr": lambda batch, gen: (*_pairs(batch, gen), None),
    "isogclr_v2": lambda batch, gen: (*_pairs(batch, gen), None),
    "supcon": lambda batch, gen: (_views(batch, gen), None, torch.arange(batch) % 3),
    "ntxent": lambda batch, gen: (_views(batch, gen), None, None),
    "ce": lambda batch, gen: (torch.randn(batch, 4, generator=gen), None, torch.arange(batch) % 4),
}


def call(name, batch, steps=2):
    """Build `name`, run `steps` steps on random batches, return the last output and the inputs."""
    loss_fn = build_loss(name, num_samples=NUM_SAMPLES)
    generator = torch.Generator().manual_seed(batch)
    for step in range(steps):
        image, text, labels = INPUTS[name](batch, generator)
        image.requires_grad_(True)
        if text is not None:
            text.requires_grad_(True)
        index = torch.arange(step * batch, (step + 1) * batch) % NUM_SAMPLES if loss_fn.needs_index else None
        out = loss_fn(image, text, index=index, labels=labels)
    return out, image, text


def test_every_registered_loss_has_test_inputs():
    assert sorted(INPUTS) == list_losses()


@pytest.mark.parametrize("batch", [2, 3, 17])
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_any_batch_of_two_or_more_gives_finite_loss_and_gradients(name, batch):
    out, image, text = call(name, batch)
    assert torch.isfinite(out["loss"]).item()
    out["loss"].backward()
    for features in (image, text):
        if features is not None:
            assert features.grad is not None and torch.isfinite(features.grad).all()
            assert features.grad.abs().sum() > 0  # the loss depends on every input tower
    for key, value in out.items():
        assert value.dim() == 0 and torch.isfinite(value).item(), key


@pytest.mark.parametrize("name", sorted(set(INPUTS) - {"ce"}))
def test_batch_of_one_raises_value_error_saying_how_to_fix_it(name):
    with pytest.raises(ValueError, match="drop_last"):
        call(name, batch=1, steps=1)


def test_ce_accepts_a_batch_of_one_because_it_contrasts_nothing():
    out, image, _ = call("ce", batch=1, steps=1)
    assert torch.isfinite(out["loss"]).item()
