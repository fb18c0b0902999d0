"""`ce`: supervised cross-entropy, the baseline of the classification protocol.

L = mean_i CE(logits_i, y_i), with optional label smoothing (Szegedy et al., CVPR 2016, Sec. 7):
the target puts 1 - label_smoothing on the true class and label_smoothing spread evenly over all
C classes.

The classifier's logits arrive as `image_features` (B, C); `labels` (B,) are class ids;
`text_features` is unused (pass None). Nothing is contrasted within the batch, so a batch of 1
is accepted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ContrastiveLoss


class CrossEntropyLoss(ContrastiveLoss):
    """forward(image_features = logits (B, C), labels (B,)) -> dict with "loss" and "accuracy"."""

    needs_labels = True
    needs_text = False
    name = "ce"

    def __init__(self, *, label_smoothing: float):
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, image_features, text_features=None, index=None, labels=None):
        logits = image_features
        if logits.dim() != 2 or logits.shape[0] < 1:
            raise ValueError(f"loss 'ce' expects logits (B, C) as image_features, got {tuple(logits.shape)}")
        if labels is None or torch.as_tensor(labels).shape != (logits.shape[0],):
            raise ValueError(f"loss 'ce' needs labels of shape ({logits.shape[0]},), one class id per sample")
        labels = torch.as_tensor(labels, device=logits.device).long()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy}
