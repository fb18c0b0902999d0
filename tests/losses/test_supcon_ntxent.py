"""supcon and ntxent against explicit loops and pytorch-metric-learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses

from clipsearch.losses import build_loss

torch.set_num_threads(1)


def reference_supcon(views, labels, temperature):
    """Khosla et al. Eq. (2), one anchor and one positive at a time.

    views: nested lists (N, V, d) of floats, L2-normalised; labels: N ints. Anchors without a
    positive are left out of the mean. Returns (loss, number of anchors with a positive).
    """
    z = [vector for sample in views for vector in sample]
    y = [label for label, sample in zip(labels, views) for _ in sample]
    dot = lambda a, b: sum(x * w for x, w in zip(a, b))  # noqa: E731
    per_anchor = []
    for i in range(len(z)):
        log_denominator = math.log(sum(math.exp(dot(z[i], z[a]) / temperature)
                                       for a in range(len(z)) if a != i))
        positives = [p for p in range(len(z)) if p != i and y[p] == y[i]]
        if positives:
            per_anchor.append(-sum(dot(z[i], z[p]) / temperature - log_denominator
                                   for p in positives) / len(positives))
    return (sum(per_anchor) / len(per_anchor) if per_anchor else 0.0), len(per_anchor)


def reference_ntxent(views, temperature):
    """SimCLR Eq. (1): l(k, k') = -log exp(s_kk' / T) / sum_{a != k} exp(s_ka / T) over all 2N anchors."""
    z = [vector for pair in views for vector in pair]  # 2k and 2k+1 are the two views of image k
    dot = lambda a, b: sum(x * w for x, w in zip(a, b))  # noqa: E731
    total = 0.0
    for k in range(len(z)):
        partner = k + 1 if k % 2 == 0 else k - 1
        denominator = sum(math.exp(dot(z[k], z[a]) / temperature) for a in range(len(z)) if a != k)
        total += -math.log(math.exp(dot(z[k], z[partner]) / temperature) / denominator)
    return total / len(z)


def normalised(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
@pytest.mark.parametrize("views", [1, 2, 3])
def test_supcon_matches_explicit_loops_including_anchors_without_positives(views, temperature):
    # class 7 has a single sample: with one view its anchor has no positive and must not count
    labels = [0, 1, 0, 2, 1, 2, 7]
    features = normalised(len(labels), views, 6)
    out = build_loss("supcon", {"temperature": temperature})(features, None, labels=torch.tensor(labels))
    expected, anchors = reference_supcon(features.double().tolist(), labels, temperature)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["anchors_with_positives"].item() == anchors
    assert anchors == (6 if views == 1 else 7 * views)


@pytest.mark.parametrize("temperature", [0.07, 0.1, 1.0])
@pytest.mark.parametrize("views", [1, 2])
def test_supcon_equals_pytorch_metric_learning_when_every_anchor_has_a_positive(views, temperature):
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3, 3])
    features = normalised(len(labels), views, 5, seed=1)
    ours = build_loss("supcon", {"temperature": temperature})(features, None, labels=labels)["loss"]
    # pml's SupConLoss uses T directly (no T / T_base factor) on cosine similarities of the flat
    # views, and averages over anchors: the same convention as clipsearch's T_base = T
    theirs = pml_losses.SupConLoss(temperature=temperature)(
        features.reshape(-1, 5), labels.repeat_interleave(views))
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)


def test_supcon_without_any_positive_is_a_connected_zero_not_nan():
    features = normalised(4, 3, seed=2).requires_grad_(True)
    out = build_loss("supcon")(features, None, labels=torch.tensor([0, 1, 2, 3]))
    assert out["loss"].item() == 0.0
    assert out["anchors_with_positives"].item() == 0
    out["loss"].backward()  # connected to the graph: the trainer's backward does not fail
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_supcon_normalises_its_input():
    features = normalised(6, 2, 4, seed=3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = build_loss("supcon")
    assert loss_fn(3.0 * features, None, labels=labels)["loss"].item() == pytest.approx(
        loss_fn(features, None, labels=labels)["loss"].item(), rel=1e-6)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
@pytest.mark.parametrize("batch", [2, 5])
def test_ntxent_matches_explicit_simclr_loops(batch, temperature):
    views = normalised(batch, 2, 4, seed=batch)
    out = build_loss("ntxent", {"temperature": temperature})(views, None)
    assert out["loss"].item() == pytest.approx(reference_ntxent(views.double().tolist(), temperature), rel=1e-5)


def test_ntxent_is_supcon_with_each_image_its_own_class():
    views = normalised(5, 2, 4, seed=4)
    ntxent = build_loss("ntxent", {"temperature": 0.2})(views, None)["loss"]
    supcon = build_loss("supcon", {"temperature": 0.2})(views, None, labels=torch.arange(5))["loss"]
    assert ntxent.item() == pytest.approx(supcon.item(), rel=1e-6)


def test_ntxent_with_a_single_view_raises_value_error_asking_for_two():
    with pytest.raises(ValueError, match=r"\(N, 2, d\)"):
        build_loss("ntxent")(normalised(4, 1, 3), None)


def test_supcon_without_labels_raises_value_error_asking_for_them():
    with pytest.raises(ValueError, match="needs labels"):
        build_loss("supcon")(normalised(4, 3), None)
