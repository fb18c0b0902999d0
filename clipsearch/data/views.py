"""Labelled image batches for the image-only task, with augmented views.

- `ViewAugment`: SimCLR's view pipeline (Chen et al., ICML 2020, Appendix A): RandomResizedCrop,
  horizontal flip, colour jitter (p = 0.8; brightness, contrast, saturation), grayscale, from torchvision.transforms.v2, applied to
  each image on its own (v2 on a batch tensor would give the whole batch one crop).
- `ShuffledBatches`: an epoch is a random permutation of the training set in batches (ce,
  ntxent, supcon with the shuffle sampler).
- `BalancedBatches`: k classes x n images per batch (seed 000's sampler for SupCon), keeping
  small classes; see its docstring.

All randomness comes from the trainer's `torch.Generator` (checkpointed), so a resumed run draws
the same batches and views. The augmentations draw from torch's global RNG, which v2 uses, but
inside `torch.random.fork_rng` seeded from that generator: the global RNG the model's own
randomness (dropout) uses is left as it was.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import InputError
from .batches import to_float_images
from .imageset import ImageTextSet


@dataclass
class ImageBatch:
    images: torch.Tensor     # (B, V, 3, S, S) float, V views per image
    labels: torch.Tensor     # (B,) long
    index: torch.Tensor      # (B,) positions in the training set


class ViewAugment:
    """Random views of normalised float images (B, 3, S, S) -> (B, V, 3, S, S)."""

    def __init__(self, image_size: int, views: int, crop_scale: float, flip: float, jitter: float,
                 grayscale: float, enabled: bool = True):
        from torchvision.transforms import v2

        self.views, self.enabled = views, enabled
        steps = [v2.RandomResizedCrop(image_size, scale=(crop_scale, 1.0), antialias=True)]
        if flip > 0:
            steps.append(v2.RandomHorizontalFlip(flip))
        if jitter > 0:
            # no hue shift: torchvision's costs 20 times the rest of the pipeline on a CPU
            steps.append(v2.RandomApply([v2.ColorJitter(jitter, jitter, jitter)], p=0.8))
        if grayscale > 0:
            steps.append(v2.RandomGrayscale(grayscale))
        self.transform = v2.Compose(steps)

    def __call__(self, uint8_images: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        if not self.enabled:
            return to_float_images(uint8_images)[:, None].expand(-1, self.views, -1, -1, -1)
        x = torch.tensor(np.asarray(uint8_images)).permute(0, 3, 1, 2)  # a copy: memmaps are read-only
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # v2's colour ops expect uint8 or [0, 1] floats: augment uint8, normalise after
            out = torch.stack([torch.stack([self.transform(img) for _ in range(self.views)]) for img in x])
        b, v = out.shape[:2]
        return to_float_images(out.view(b * v, *out.shape[2:]).permute(0, 2, 3, 1)).view(b, v, *out.shape[2:])


class ShuffledBatches:
    """Shuffled labelled batches; the last partial batch is kept unless it has one image."""

    def __init__(self, data: ImageTextSet, batch_size: int, augment: ViewAugment):
        self.data, self.batch_size, self.augment = data, batch_size, augment

    def __len__(self) -> int:
        full, rest = divmod(len(self.data), self.batch_size)
        return full + (1 if rest >= 2 else 0)

    def epoch(self, generator: torch.Generator) -> Iterator[ImageBatch]:
        order = torch.randperm(len(self.data), generator=generator).numpy()
        for step in range(len(self)):
            idx = np.sort(order[step * self.batch_size:(step + 1) * self.batch_size])
            yield _batch(self.data, idx, self.augment, generator)


class BalancedBatches:
    """k classes x n images per batch (k = batch_size / n), every class kept.

    Each step draws k distinct classes uniformly (so small classes are seen as often as large
    ones), then n images of each without replacement. A class with fewer than n images is kept
    and its images are drawn with replacement: a batch may hold the same image twice, as two
    different augmented views (with data.augment off, as the same view); a class of one image
    thus still gives its anchor a positive. An epoch has len(data) // (k n) steps (at least one).
    """

    def __init__(self, data: ImageTextSet, batch_size: int, images_per_class: int, augment: ViewAugment):
        self.data, self.augment, self.n = data, augment, images_per_class
        self.k = check_balanced(data, batch_size, images_per_class)
        self.by_class = [np.flatnonzero(data.labels == c) for c in np.unique(data.labels)]
        small = [len(idx) for idx in self.by_class if len(idx) < self.n]
        if small:
            print(f"sampler: {len(small)} class(es) have fewer than n = {self.n} images (smallest: {min(small)}); "
                  "their images are drawn with replacement, so a batch may repeat an image", file=sys.stderr)

    def __len__(self) -> int:
        return max(1, len(self.data) // (self.k * self.n))

    def epoch(self, generator: torch.Generator) -> Iterator[ImageBatch]:
        for _ in range(len(self)):
            classes = torch.randperm(len(self.by_class), generator=generator)[:self.k].tolist()
            idx = np.concatenate([self._draw(self.by_class[c], generator) for c in classes])
            yield _batch(self.data, idx, self.augment, generator)

    def _draw(self, members: np.ndarray, generator: torch.Generator) -> np.ndarray:
        if len(members) >= self.n:
            return members[torch.randperm(len(members), generator=generator)[:self.n].numpy()]
        return members[torch.randint(0, len(members), (self.n,), generator=generator).numpy()]


def check_balanced(data: ImageTextSet, batch_size: int, n: int) -> int:
    """k for a balanced batch of `batch_size` = k x n; InputError when it cannot be drawn."""
    classes = len(np.unique(data.labels))
    if batch_size > len(data):
        raise InputError(f"a batch of k x n = {batch_size} images is larger than the {len(data)} training images",
                         where="train.batch_size", fix=f"use train.batch_size <= {len(data)}")
    if batch_size % n:
        raise InputError(f"train.batch_size {batch_size} is not k x n for n = image.images_per_class {n}",
                         where="train.batch_size", fix=f"use a multiple of {n}, e.g. {max(2, batch_size // n) * n}")
    k = batch_size // n
    if k > classes:
        raise InputError(f"k = train.batch_size / image.images_per_class = {k} classes per batch, but the data "
                         f"has {classes}", where="image.images_per_class",
                         fix=f"raise image.images_per_class to >= {-(-batch_size // classes)} or lower train.batch_size")
    if k * n < 2:
        raise InputError("a balanced batch needs at least 2 images", where="train.batch_size", fix="use >= 2")
    return k


def _batch(data: ImageTextSet, idx: np.ndarray, augment: ViewAugment, generator: torch.Generator) -> ImageBatch:
    return ImageBatch(augment(data.images[idx], generator), torch.from_numpy(data.labels[idx]), torch.from_numpy(idx))
