"""`supcon` and `ntxent`: image-only contrastive losses over labelled views.

`supcon`: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, Eq. (2) (L^sup_out).
For the M = N * V views z (L2-normalised) with labels y (a view inherits its sample's label),
anchor i has the positives P(i) = {p != i : y_p = y_i} and the contrast set A(i) = {a != i}:

    l_i = -1/|P(i)| sum_{p in P(i)} [ z_i.z_p / T - log sum_{a in A(i)} exp(z_i.z_a / T) ]
    L   = mean of l_i over the anchors whose P(i) is not empty

The paper's T / T_base prefactor is 1 here (T_base = T): with a fixed T_base, searching T would
also rescale the loss and act as a second learning rate.

An anchor without a positive is left out of the mean rather than counted as 0 (which would drag
the mean down) or divided by |P(i)| = 0 (NaN). When no anchor has a positive the loss is a 0
that is still connected to the graph, and "anchors_with_positives" in the returned dict says so.

`ntxent`: SimCLR's NT-Xent (Chen et al., ICML 2020, Eq. (1)): SupCon where the label is the
sample's own id, with V = 2 augmented views per image.

Both take their views as `image_features`: (N, d) (one view) or (N, V, d); `text_features` is
unused (pass None). The embeddings are L2-normalised here (a no-op on normalised input), since
the formula is over cosine similarities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ContrastiveLoss, check_batch_size


def supervised_contrastive_loss(z: torch.Tensor, labels: torch.Tensor,
                                temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SupCon over M anchors. z (M, d) L2-normalised, labels (M,) -> (loss, anchors with positives)."""
    count = z.shape[0]
    self_pair = torch.eye(count, dtype=torch.bool, device=z.device)
    logits = z @ z.T / temperature
    log_denominator = torch.logsumexp(logits.masked_fill(self_pair, float("-inf")), dim=1, keepdim=True)
    log_prob = logits - log_denominator
    positive = (labels[:, None] == labels[None, :]) & ~self_pair
    positives_per_anchor = positive.sum(dim=1)
    has_positive = positives_per_anchor > 0
    # where() rather than a product: the masked entries must not reach the sum even if not finite
    mean_log_prob = torch.where(positive, log_prob, 0.0).sum(dim=1) / positives_per_anchor.clamp(min=1)
    loss = -(mean_log_prob * has_positive).sum() / has_positive.sum().clamp(min=1)
    return loss, has_positive.sum()


def _views(loss_name: str, features: torch.Tensor) -> torch.Tensor:
    """(N, d) or (N, V, d) -> (N, V, d)."""
    if features.dim() == 2:
        features = features[:, None, :]
    if features.dim() != 3:
        raise ValueError(f"loss {loss_name!r} expects image_features of shape (N, d) or (N, V, d) "
                         f"(V views per sample), got {tuple(features.shape)}")
    check_batch_size(loss_name, features.shape[0])
    return features


def _flatten_views(views: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V, d), (N,) -> the M = N * V views (M, d), normalised, and their labels (M,)."""
    n, v, d = views.shape
    return F.normalize(views.reshape(n * v, d), dim=-1), labels.repeat_interleave(v)


class SupConLoss(ContrastiveLoss):
    """SupCon (see module docstring). temperature: T > 0, default 0.07.

    forward(image_features (N, d) or (N, V, d), text_features=None, labels=(N,)) -> dict with
    "loss" and "anchors_with_positives".
    """

    needs_labels = True
    needs_text = False
    name = "supcon"

    def __init__(self, *, temperature: float):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, image_features, text_features=None, index=None, labels=None):
        views = _views(self.name, image_features)
        if labels is None or torch.as_tensor(labels).shape != (views.shape[0],):
            raise ValueError(f"loss {self.name!r} needs labels of shape ({views.shape[0]},), one class id "
                             f"per sample; got {None if labels is None else tuple(torch.as_tensor(labels).shape)}")
        labels = torch.as_tensor(labels, device=views.device)
        z, view_labels = _flatten_views(views, labels)
        loss, anchors = supervised_contrastive_loss(z, view_labels, self.temperature)
        return {"loss": loss, "anchors_with_positives": anchors.detach().float()}


class NTXentLoss(ContrastiveLoss):
    """NT-Xent (SimCLR): SupCon with each sample its own class. temperature: T > 0, default 0.1.

    forward(image_features (N, V, d) with V >= 2 views, V = 2 in SimCLR) -> dict with "loss".
    """

    needs_text = False
    name = "ntxent"

    def __init__(self, *, temperature: float):
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, image_features, text_features=None, index=None, labels=None):
        views = _views(self.name, image_features)
        if views.shape[1] < 2:
            raise ValueError(f"loss {self.name!r} needs at least 2 views per image, image_features of shape "
                             f"(N, 2, d); got {tuple(image_features.shape)}")
        own_id = torch.arange(views.shape[0], device=views.device)
        z, view_labels = _flatten_views(views, own_id)
        loss, _ = supervised_contrastive_loss(z, view_labels, self.temperature)
        return {"loss": loss}
