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
from .batches import IMAGENET, ImagePreprocess, check_image_size, to_float_images
from .imageset import ImageTextSet


@dataclass
class ImageBatch:
    images: torch.Tensor     # (B, V, 3, S, S) float, V views per image
    labels: torch.Tensor     # (B,) long
    index: torch.Tensor      # (B,) positions in the training set


class ViewAugment:
    """Random views of uint8 images (B, S, S, 3) -> normalised float (B, V, 3, S, S), normalised
    with the image tower's `preprocess` (ImageEncoder.image_preprocess)."""

    def __init__(self, image_size: int, views: int, crop_scale: float, flip: float, jitter: float,
                 grayscale: float, enabled: bool = True, preprocess: ImagePreprocess = IMAGENET):
        from torchvision.transforms import v2

        check_image_size(preprocess, image_size)
        self.views, self.enabled, self.preprocess = views, enabled, preprocess
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
            return to_float_images(uint8_images, self.preprocess)[:, None].expand(-1, self.views, -1, -1, -1)
        x = torch.tensor(np.asarray(uint8_images)).permute(0, 3, 1, 2)  # a copy: memmaps are read-only
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # v2's colour ops expect uint8 or [0, 1] floats: augment uint8, normalise after
            out = torch.stack([torch.stack([self.transform(img) for _ in range(self.views)]) for img in x])
        b, v = out.shape[:2]
        flat = out.view(b * v, *out.shape[2:]).permute(0, 2, 3, 1)
        return to_float_images(flat, self.preprocess).view(b, v, *out.shape[2:])


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
    """k for a balanced batch of `batch_size` = k x n; InputError when it cannot be drawn.

    The fix an error suggests passes every check here at once (it is searched for with the same
    checks), so following it cannot run into the next check.
    """
    classes, images = len(np.unique(data.labels)), len(data)
    problem = _balanced_problem(batch_size, n, classes, images)
    if problem is not None:
        what, where = problem
        raise InputError(what, where=where, fix=_balanced_fix(batch_size, n, classes, images))
    return batch_size // n


def _balanced_problem(batch_size: int, n: int, classes: int, images: int) -> tuple[str, str] | None:
    """(what is wrong, the key to change) when k x n = batch_size cannot be drawn, else None."""
    if batch_size > images:
        return (f"a batch of k x n = {batch_size} images is larger than the {images} training images",
                "train.batch_size")
    if batch_size % n:
        return f"train.batch_size {batch_size} is not k x n for n = image.images_per_class {n}", "train.batch_size"
    if batch_size // n > classes:
        return (f"k = train.batch_size / image.images_per_class = {batch_size // n} classes per batch, but the "
                f"data has {classes}", "image.images_per_class")
    if batch_size < 2:
        return "a balanced batch needs at least 2 images", "train.batch_size"
    return None


def _balanced_fix(batch_size: int, n: int, classes: int, images: int) -> str:
    """The nearest n for this batch size and the nearest batch size for this n that pass every
    check, or, when neither key alone can, the largest batch size up to this one with its nearest
    n. Batches of k >= 2 classes are preferred: a batch of one class has no negatives."""
    def ok(b: int, m: int) -> bool:
        return _balanced_problem(b, m, classes, images) is None

    def nearest_n(b: int) -> int | None:
        fits = [m for m in range(1, b + 1) if ok(b, m)]
        return min(fits, key=lambda m: (b // m < 2, abs(m - n), m), default=None)

    options = []  # (batch size, n, the settings to write)
    if (m := nearest_n(batch_size)) is not None:
        options.append((batch_size, m, f"image.images_per_class={m}"))
    sizes = [b for b in range(n, min(images, classes * n) + 1, n) if ok(b, n)]
    if sizes:
        b = min(sizes, key=lambda b: (b // n < 2, abs(b - batch_size), -b))
        options.append((b, n, f"train.batch_size={b}"))
    if not options:
        b = next((b for b in range(min(batch_size, images), 1, -1) if nearest_n(b) is not None), None)
        if b is None:
            return f"the training split has {images} image(s) in {classes} class(es): give it at least 2 images"
        options.append((b, nearest_n(b), f"train.batch_size={b} and image.images_per_class={nearest_n(b)}"))
    if any(b // m >= 2 for b, m, _ in options):
        options = [option for option in options if option[0] // option[1] >= 2]
    return "set " + ", or ".join(f"{keys} (k x n = {_classes(b // m)} x {m} images)" for b, m, keys in options)


def _classes(k: int) -> str:
    return f"{k} class" if k == 1 else f"{k} classes"


def _batch(data: ImageTextSet, idx: np.ndarray, augment: ViewAugment, generator: torch.Generator) -> ImageBatch:
    return ImageBatch(augment(data.images[idx], generator), torch.from_numpy(data.labels[idx]), torch.from_numpy(idx))
