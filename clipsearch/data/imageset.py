"""The in-memory form every clipsearch image reader ends in.

`ImageTextSet` holds decoded images as one uint8 array (usually a read-only `np.memmap` over
the decoded-image cache, see `clipsearch.data.cache`) beside their captions, names and, for
classification data, labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageTextSet:
    """Decoded images and their captions.

    images: uint8 (N, S, S, 3) RGB, resized (shorter side to S) and centre-cropped to S x S;
        may be a read-only np.memmap.
    captions: per image, a list of >= 1 non-empty captions.
    names: per image, its file path (relative to the data root where it lies under it), a
        webdataset key or an id: what messages and submissions call the image.
    labels: (N,) int64 class ids into `class_names`, or None for caption-only data.
    class_names: the class of each label id, or None.
    skipped: names of sources dropped as corrupt when read with on_corrupt="skip".
    """

    images: np.ndarray
    captions: list[list[str]]
    names: list[str]
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise ValueError(
                f"images must be uint8 (N, S, S, 3), got {self.images.dtype} {self.images.shape}"
            )
        if len(self.captions) != n or len(self.names) != n:
            raise ValueError(
                f"{n} images but {len(self.captions)} caption lists and {len(self.names)} names"
            )
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        """S, the side of every (square) image."""
        return int(self.images.shape[1])

    def subset(self, idx: np.ndarray) -> ImageTextSet:
        """The images at positions `idx` (any int array, in its order).

        An evenly spaced increasing `idx` (a range, possibly strided) keeps a memmap a lazy
        view; any other order copies the selected images into memory, as numpy indexing does.
        """
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        as_slice = _as_slice(idx, len(self))
        images = self.images[as_slice] if as_slice is not None else self.images[idx]
        return ImageTextSet(
            images=images,
            captions=[self.captions[i] for i in idx],
            names=[self.names[i] for i in idx],
            labels=None if self.labels is None else self.labels[idx],
            class_names=self.class_names,
            skipped=list(self.skipped),
        )


def _as_slice(idx: np.ndarray, n: int) -> slice | None:
    """`idx` as an equivalent slice when it is an increasing arithmetic run inside [0, n)."""
    if len(idx) == 0 or idx[0] < 0 or idx[-1] >= n:
        return None
    if len(idx) == 1:
        return slice(int(idx[0]), int(idx[0]) + 1)
    steps = np.diff(idx)
    step = int(steps[0])
    if step <= 0 or not np.all(steps == step):
        return None
    return slice(int(idx[0]), int(idx[-1]) + 1, step)
