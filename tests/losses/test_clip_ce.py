"""clip and ce against explicit loops; clip's image/text symmetry and its temperature."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clipsearch.errors import InputError
from clipsearch.losses import build_loss
from clipsearch.losses.clip import MAX_LOGIT_SCALE

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


@pytest.mark.parametrize("temperature", [0.005, 0.01, 0.07, 1.0])
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


def test_fixed_temperature_below_001_is_used_as_given():
    """A fixed tau was clamped to logit_scale <= ln 100: 0.005, 0.007 and 0.01 gave one loss."""
    image, text = random_pairs(6)
    losses = [build_loss("clip", {"temperature": tau})(image, text)["loss"].item() for tau in (0.005, 0.007, 0.01)]
    assert losses[0] > losses[1] > losses[2]  # mismatched pairs: a sharper softmax costs more
    assert build_loss("clip", {"temperature": 0.005})(image, text)["temperature"].item() == pytest.approx(0.005)


def test_learnable_temperature_moves_from_001():
    """float32(ln 100) lies just above ln 100: a clamp in the graph gave logit_scale a gradient of
    exactly 0 there, so a learnable tau started at 0.01 never moved."""
    image, text = random_pairs(8)
    loss_fn = build_loss("clip", {"temperature": 0.01, "learnable_temperature": 1})
    optimizer = torch.optim.AdamW(loss_fn.parameters(), lr=0.01, weight_decay=0.0)
    start = loss_fn.logit_scale.item()
    for _ in range(3):
        optimizer.zero_grad()
        loss_fn(image, text)["loss"].backward()
        assert loss_fn.logit_scale.grad.item() > 0  # mismatched pairs want a softer softmax
        optimizer.step()
    assert loss_fn.logit_scale.item() == pytest.approx(start - 0.03, abs=1e-3)  # Adam: ~lr a step


def test_learnable_logit_scale_follows_open_clips_clamp_after_each_step():
    """The logit_scale each forward uses, step by step, equals open_clip's loop (clamp_(max=ln 100)
    after optimizer.step) while the loss first pushes it against the bound (matched pairs), then
    down again (mismatched pairs): the bound holds and the gradient is not lost at it."""
    matched = F.normalize(torch.eye(4, 6) + 1.0, dim=1)  # matched but alike: a sharper softmax helps
    batches = [(matched, matched)] * 4 + [random_pairs(4)] * 4
    loss_fn = build_loss("clip", {"temperature": 0.0101, "learnable_temperature": 1})
    ours = torch.optim.Adam(loss_fn.parameters(), lr=0.01)
    open_clip_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.0101)))
    theirs = torch.optim.Adam([open_clip_scale], lr=0.01)
    used, expected = [], []
    for image, text in batches:
        ours.zero_grad()
        out = loss_fn(image, text)
        out["loss"].backward()
        ours.step()
        used.append(-math.log(out["temperature"].item()))

        expected.append(open_clip_scale.item())
        theirs.zero_grad()
        logits = open_clip_scale.exp() * image @ text.T
        target = torch.arange(len(image))
        (0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))).backward()
        theirs.step()
        with torch.no_grad():
            open_clip_scale.clamp_(max=MAX_LOGIT_SCALE)
    assert used == pytest.approx(expected, abs=1e-5)
    assert max(used) == pytest.approx(MAX_LOGIT_SCALE, abs=1e-6)  # it reached the bound
    assert used[-1] < MAX_LOGIT_SCALE - 0.01  # and came off it


def test_learnable_temperature_below_001_raises_input_error_naming_loss_temperature():
    """A learnable tau below 0.01 would start above the bound and be raised to 0.01 unsaid."""
    with pytest.raises(InputError, match="loss.temperature"):
        build_loss("clip", {"temperature": 0.005, "learnable_temperature": 1})


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
