"""clip and ce against explicit loops; clip's image/text symmetry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipsearch.losses import build_loss

torch.set_num_threads(1)


def reference_clip(S, tau):
    """1/2 [CE(S / tau, arange) + CE(S^T / tau, arange)] with one anchor at a time."""
    B = len(S)
    image_side = sum(-S[i][i] / tau + math.log(sum(math.exp(S[i][j] / tau) for j in range(B)))
                     for i in range(B)) / B
    text_side = sum(-S[j][j] / tau + math.log(sum(math.exp(S[i][j] / tau) for i in range(B)))
                    for j in range(B)) / B
    return (image_side + text_side) / 2


def reference_cross_entropy(logits, labels, smoothing):
    """-(1 - s) log p_y - s/C sum_c log p_c, averaged over the batch."""
    total = 0.0
    for row, y in zip(logits, labels):
        top = max(row)
        log_z = top + math.log(sum(math.exp(x - top) for x in row))
        log_p = [x - log_z for x in row]
        total += -(1 - smoothing) * log_p[y] - smoothing / len(row) * sum(log_p)
    return total / len(labels)


def random_pairs(batch, dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    text = F.normalize(image + torch.randn(batch, dim, generator=generator), dim=1)
    return image, text


@pytest.mark.parametrize("temperature", [0.01, 0.07, 1.0])
@pytest.mark.parametrize("batch", [2, 5])
def test_clip_matches_explicit_loops(batch, temperature):
    image, text = random_pairs(batch, seed=batch)
    out = build_loss("clip", {"temperature": temperature})(image, text)
    expected = reference_clip((image.double() @ text.double().T).tolist(), temperature)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("learnable", [0.0, 1.0])
def test_clip_is_unchanged_when_image_and_text_are_swapped(learnable):
    image, text = random_pairs(7)
    loss_fn = build_loss("clip", {"temperature": 0.05, "learnable_temperature": learnable})
    assert loss_fn(image, text)["loss"].item() == pytest.approx(loss_fn(text, image)["loss"].item(), rel=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("batch", [1, 4])
def test_ce_matches_explicit_loops_with_label_smoothing(batch, smoothing):
    logits = torch.randn(batch, 5, generator=torch.Generator().manual_seed(batch))
    labels = torch.arange(batch) % 5
    out = build_loss("ce", {"label_smoothing": smoothing})(logits, None, labels=labels)
    expected = reference_cross_entropy(logits.double().tolist(), labels.tolist(), smoothing)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["accuracy"].item() == pytest.approx(
        sum(int(row.argmax() == y) for row, y in zip(logits, labels)) / batch)
