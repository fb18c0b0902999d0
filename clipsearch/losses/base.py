"""What every clipsearch loss shares: one call signature and a registry entry.

Every loss is an `nn.Module` called as

    loss_fn(image_features, text_features, index=None, labels=None) -> dict

- image_features, text_features: (B, d) L2-normalised embeddings. Image-only losses
  (supcon, ntxent, ce) take their views or logits as `image_features` and ignore
  `text_features` (pass None).
- index: (B,) long, each sample's position in the whole training set (0..N-1); the global
  losses address their per-sample state with it.
- labels: (B,) long, class ids (supcon, ce).

The dict holds "loss" (the scalar to backpropagate) and any diagnostics as detached scalar
tensors; the trainer averages diagnostics over an epoch and reports them with the metrics
(open_clip's loss-returns-a-dict idea, so diagnostics ride along without a second API).
Per-epoch summaries that need the whole state (temperature min/max over the data set) come
from `epoch_diagnostics()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..hparams import Param


class ContrastiveLoss(nn.Module):
    """Base class: subclasses implement forward() with the shared signature."""

    #: True when the loss keeps per-sample state and needs `index` (and `num_samples` at build)
    needs_index: bool = False
    #: True when the loss needs `labels`
    needs_labels: bool = False
    #: True when the loss contrasts two towers (image and text)
    needs_text: bool = True

    def epoch_diagnostics(self) -> dict[str, float]:
        """Summaries over the loss's whole state, reported once per epoch."""
        return {}


def check_batch_size(loss_name: str, batch_size: int) -> None:
    """Raise a ValueError saying how to fix a batch too small to hold a negative."""
    if batch_size < 2:
        raise ValueError(
            f"loss {loss_name!r} contrasts the samples of a batch with each other and got a batch of "
            f"{batch_size}, which has no negative; use a batch size >= 2 and drop a last batch of 1 "
            f"(DataLoader(..., drop_last=True), or a batch size that does not divide the data set "
            f"with remainder 1)")


def check_pair_features(loss_name: str, image_features: torch.Tensor,
                        text_features: torch.Tensor | None) -> None:
    """The two towers' embeddings must be (B, d) each, same shape, B >= 2."""
    if text_features is None:
        raise ValueError(f"loss {loss_name!r} contrasts images with texts: pass text_features (B, d)")
    if image_features.dim() != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            f"loss {loss_name!r} expects image_features and text_features of the same shape (B, d); "
            f"got {tuple(image_features.shape)} and {tuple(text_features.shape)}")
    check_batch_size(loss_name, image_features.shape[0])


@dataclass(frozen=True)
class LossInfo:
    """Registry entry (timm's OptimInfo idea): how to build a loss and what it accepts."""

    name: str
    cls: Callable[..., ContrastiveLoss]
    params: dict[str, Param] = field(default_factory=dict)
    description: str = ""
    #: cross-parameter checks: each takes the resolved params, returns an error or None
    checks: tuple[Callable[[dict[str, float]], str | None], ...] = ()
    # What an image-only loss needs of the image task (clipsearch.tasks.image); data here, so
    # that no task tests a loss's name:
    views: int = 2               # augmented views per image when image.views is 0 (the default)
    min_views: int = 1           # the fewest views it can contrast
    sampler: str = "shuffle"     # the batches of image.sampler=auto: "shuffle", or "balanced" (k x n)
    classifier: bool = False     # trains a linear classifier on the tower; scored by its val_acc1

    @property
    def task(self) -> str:
        """The task that trains with it: "image_text" (a text side), else "image"."""
        return "image_text" if self.cls.needs_text else "image"
