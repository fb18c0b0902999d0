"""Labelled image splits for the image-only task: train, val (model selection), test (final score).

- embedded: MNIST 5,000. The fixed 4,000-image training split of `mnist_splits` gives train
  and val (the last `VAL_PER_CLASS` of each class in its fixed order); the fixed 1,000-image
  validation split is the held-out test split. `data.fraction` takes a nested share of train.
- an ImageFolder root: root/train/<class>/* (or root/<class>/* when there is no train/), and
  root/test/<class>/* when present, else `image.test_fraction` of each class held out; val is
  `image.val_fraction` of each class of what remains. The splits are seeded and stratified, so
  the same folder always gives the same split.

The test split is for the final score only: training and model selection (the kNN accuracy
between epochs, the search's metric) see train and val alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .imageset import ImageTextSet

VAL_PER_CLASS = 50
SPLIT_SEED = 20241123


@dataclass
class LabelledSplits:
    train: ImageTextSet
    val: ImageTextSet
    test: ImageTextSet

    @property
    def class_names(self) -> list[str]:
        return list(self.train.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.train.class_names)


def load_labelled_splits(data_cfg, image_cfg) -> LabelledSplits:
    """The three splits `data.source` names (see the module docstring), `data.fraction` applied to train."""
    from .embedded import subset_fraction

    if data_cfg.source == "embedded":
        splits = mnist_labelled_splits(data_cfg.image_size)
    else:
        splits = folder_splits(Path(data_cfg.source), data_cfg, image_cfg)
    return LabelledSplits(subset_fraction(splits.train, data_cfg.fraction), splits.val, splits.test)


def mnist_labelled_splits(image_size: int) -> LabelledSplits:
    from .embedded import mnist_splits

    train_val, test = mnist_splits(image_size)
    val = np.zeros(len(train_val), dtype=bool)
    for c in np.unique(train_val.labels):
        val[np.flatnonzero(train_val.labels == c)[-VAL_PER_CLASS:]] = True
    return LabelledSplits(train_val.subset(np.flatnonzero(~val)), train_val.subset(np.flatnonzero(val)), test)


def folder_splits(root: Path, data_cfg, image_cfg) -> LabelledSplits:
    from .readers import load_image_folder_set

    def read(folder: Path) -> ImageTextSet:
        return load_image_folder_set(folder, data_cfg.image_size, data_cfg.cache_dir,
                                     on_corrupt=data_cfg.on_corrupt, min_classes=2)

    train_dir = root / "train" if (root / "train").is_dir() else root
    if train_dir == root and (root / "test").is_dir():
        raise InputError("test/ found beside class folders but no train/", where=str(root),
                         fix="put the training classes under train/<class>/")
    pool = read(train_dir)
    if (root / "test").is_dir():
        test = read(root / "test")
        if test.class_names != pool.class_names:
            raise InputError(f"test/ has classes {test.class_names}, train/ has {pool.class_names}",
                             where=str(root / "test"), fix="give test/ the same class folders as train/")
    else:
        held = stratified_share(pool.labels, image_cfg.test_fraction, SPLIT_SEED)
        pool, test = pool.subset(np.flatnonzero(~held)), pool.subset(np.flatnonzero(held))
    val = stratified_share(pool.labels, image_cfg.val_fraction, SPLIT_SEED + 1)
    return LabelledSplits(pool.subset(np.flatnonzero(~val)), pool.subset(np.flatnonzero(val)), test)


def stratified_share(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A boolean mask holding round(share * n_c) images of each class, at least one of a class
    with two or more images (a class of one image stays whole: it cannot be on both sides)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        take = min(max(1, round(share * len(idx))), len(idx) - 1)
        mask[idx[:take]] = True
    return mask
