"""Batches for the trainer, from decoded images and pre-tokenised captions.

Everything a step needs already sits in memory (or in a memmap of the decoded-image cache):
images as uint8 (N, S, S, 3), each distinct caption tokenised once. A batch is then a few
tensor indexing operations, so no DataLoader workers are needed and nothing is decoded twice
(the per-item PIL decode is the bottleneck `clipsearch bench train` measures against).

Randomness (the epoch's order, which caption of each image, the shifts) comes from one
`torch.Generator` whose state the trainer checkpoints: a resumed run draws the same batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import InputError
from .imageset import ImageTextSet


@dataclass(frozen=True)
class ImagePreprocess:
    """What an image tower expects of its input (its library's own record of how its weights
    were trained: `open_clip.get_model_preprocess_cfg`, `timm.data.resolve_model_data_config`).

    mean, std: the channel statistics images are normalised with, in [0, 1] units.
    size: the tower's native input side in pixels; fixed_size: whether it takes no other side
    (a ViT's or an open_clip tower's learned positional table has one length).
    interpolation: the resampling its weights were trained with. clipsearch resizes once, when it
    decodes images to data.image_size (bicubic for files, bilinear for the embedded digits), and
    never again per tower: size and interpolation are recorded, and only a fixed size is
    enforced (`check_image_size`).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int | None = None
    fixed_size: bool = False
    interpolation: str = "bicubic"
    source: str = "imagenet"  # where the values come from, for messages and logs

    @cached_property
    def _scaled(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(255 mean, 255 std) as (1, 3, 1, 1): uint8 images are normalised without a / 255 pass."""
        return (torch.tensor(self.mean).view(1, 3, 1, 1) * 255.0, torch.tensor(self.std).view(1, 3, 1, 1) * 255.0)


#: ImageNet's statistics: what a tower without a record of its own gets (and the benchmarks use)
IMAGENET = ImagePreprocess((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), source="imagenet")
MEAN = torch.tensor(IMAGENET.mean).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET.std).view(1, 3, 1, 1)


def check_image_size(preprocess: ImagePreprocess, image_size: int) -> None:
    """InputError when the tower takes one input side only and data.image_size is another."""
    if preprocess.fixed_size and preprocess.size is not None and preprocess.size != image_size:
        raise InputError(f"the image tower takes {preprocess.size} px images only ({preprocess.source}); "
                         f"data.image_size is {image_size}", where="data.image_size",
                         fix=f"use data.image_size={preprocess.size}")


@dataclass(frozen=True)
class Tokenizer:
    """A text tower's tokenizer: texts -> dict of (N, L) tensors that the tower takes as kwargs.
    `key` names everything the output depends on (the tower's tokenizer and the length), so that
    `TextBank.build` can hand a process's later trials the bank it already built."""

    encode: Callable[[list[str]], dict[str, torch.Tensor]]
    key: str | None = None

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.encode(texts)


#: the banks this process built, by (tokenizer key, captions digest), the most recent last: a
#: reused Ray actor's next trial skips the tokenisation (0.7 s of a quick trial's 1.6 s of
#: set-up on a 2-core CPU; minutes for CC3M). Two entries, a trial's training and validation
#: captions: a bank is the size of its captions' tokens (CC3M's: about 2 GB), and a trial with
#: another data fraction replaces the training one.
_BANKS: "OrderedDict[tuple[str, str], TextBank]" = OrderedDict()
_BANKS_KEPT = 2


@dataclass
class TextBank:
    """Each distinct caption tokenised once; images point at their captions' rows."""

    tokens: dict[str, torch.Tensor]   # (M, L) tensors, one row per distinct caption
    caption_rows: list[np.ndarray]    # per image: rows of its captions in `tokens`
    features: torch.Tensor | None = None  # (M, width): a frozen text tower's output per row, or None

    @classmethod
    def build(cls, captions: list[list[str]], tokenize: Callable[[list[str]], dict[str, torch.Tensor]]) -> "TextBank":
        """The bank of `captions`; when `tokenize` is a keyed Tokenizer, the process's earlier
        bank of the same captions (its tensors shared: a bank's tokens are only read)."""
        key = getattr(tokenize, "key", None)
        if key is None:
            return cls._tokenized(captions, tokenize)
        memo_key = (key, _captions_digest(captions))
        if memo_key in _BANKS:
            _BANKS.move_to_end(memo_key)
        else:
            _BANKS[memo_key] = cls._tokenized(captions, tokenize)
            while len(_BANKS) > _BANKS_KEPT:
                _BANKS.popitem(last=False)
        return dataclasses.replace(_BANKS[memo_key], features=None)  # the caller sets its own features

    @classmethod
    def _tokenized(cls, captions: list[list[str]],
                   tokenize: Callable[[list[str]], dict[str, torch.Tensor]]) -> "TextBank":
        distinct: dict[str, int] = {}
        rows = [np.array([distinct.setdefault(c, len(distinct)) for c in caps], dtype=np.int64) for caps in captions]
        texts = list(distinct)
        chunks = [tokenize(texts[i:i + 4096]) for i in range(0, len(texts), 4096)]
        tokens = {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}
        return cls(tokens, rows)

    def rows_for(self, images: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """One caption row per image, chosen at random among the image's captions."""
        picks = torch.rand(len(images), generator=generator).numpy()
        return torch.from_numpy(np.array([rows[int(p * len(rows))] for rows, p in
                                          zip((self.caption_rows[i] for i in images), picks)]))

    def select(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return trim_padding({key: value[rows] for key, value in self.tokens.items()})


def _captions_digest(captions: list[list[str]]) -> str:
    digest = hashlib.sha256()
    for caps in captions:
        digest.update(b"\x1e".join(c.encode() for c in caps) + b"\x1d")
    return digest.hexdigest()


def trim_padding(tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the trailing columns that are padding in every row (where an attention mask says
    so): the encoder's output for the real tokens is the same, and its cost falls with the
    length (the embedded captions average 16 of their 24 tokens)."""
    mask = tokens.get("attention_mask")
    if mask is None or mask.numel() == 0:
        return tokens
    used = int(mask.any(0).nonzero().max()) + 1 if mask.any() else 1
    return tokens if used == mask.shape[1] else {key: value[:, :used] for key, value in tokens.items()}


def to_float_images(images: np.ndarray | torch.Tensor, preprocess: ImagePreprocess = IMAGENET) -> torch.Tensor:
    """uint8 (B, S, S, 3) -> float (B, 3, S, S), contiguous, normalised with the tower's
    `preprocess` (a model's `image_preprocess`; ImageNet's statistics by default).

    (x / 255 - mean) / std computed as (x - 255 mean) / (255 std) in place on the one float
    copy: this conversion is most of a cache-hit batch's cost on a CPU, and two passes instead
    of five made it 2.1-2.3x faster (128 x 224 x 224 images, 1 thread; results within 2.4e-7).
    """
    mean_255, std_255 = preprocess._scaled
    x = torch.tensor(np.asarray(images)).permute(0, 3, 1, 2).contiguous().float()  # a copy: memmaps are read-only
    return x.sub_(mean_255).div_(std_255)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random offset in [-max_shift, max_shift] (zero padding)."""
    if max_shift <= 0:
        return x
    b, _, s, _ = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = (offsets[0][:, None] + torch.arange(s))[:, :, None]     # (B, S, 1)
    cols = (offsets[1][:, None] + torch.arange(s))[:, None, :]     # (B, 1, S)
    batch = torch.arange(b)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_low_resolution(x: torch.Tensor, generator: torch.Generator, share: float = 0.5) -> torch.Tensor:
    """Blur a random share of the batch by resizing it down to a random side in [S/4, S] and back.

    Training images are often sharper than the images a model meets later (scans, thumbnails:
    the embedded zero-shot digits are 8 x 8); seeing low-resolution versions keeps the image
    tower from relying on fine detail only.
    """
    b, _, s, _ = x.shape
    chosen = torch.rand(b, generator=generator) < share
    side = int(torch.randint(max(2, s // 4), s + 1, (1,), generator=generator))
    if not chosen.any() or side == s:
        return x
    small = torch.nn.functional.interpolate(x[chosen], size=(side, side), mode="bilinear", antialias=True,
                                            align_corners=False)
    x = x.clone()
    x[chosen] = torch.nn.functional.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    return x


@dataclass
class PairBatch:
    images: torch.Tensor              # (B, 3, S, S) float
    tokens: dict[str, torch.Tensor]   # (B, L)
    index: torch.Tensor               # (B,) positions in the training set
    labels: torch.Tensor | None
    text_features: torch.Tensor | None = None  # (B, width) when the text tower is frozen (then no tokens)


class PairBatches:
    """An epoch of image-caption batches: shuffled, one random caption per image, shifted."""

    def __init__(self, data: ImageTextSet, text: TextBank, batch_size: int, augment: bool,
                 preprocess: ImagePreprocess = IMAGENET):
        check_image_size(preprocess, data.image_size)
        self.data, self.text, self.batch_size, self.augment = data, text, batch_size, augment
        self.preprocess = preprocess  # the image tower's (DualEncoder.image_preprocess)
        self.max_shift = max(1, data.image_size // 8) if augment else 0

    def __len__(self) -> int:
        # the last partial batch is kept unless it has one sample (contrastive losses need >= 2)
        full, rest = divmod(len(self.data), self.batch_size)
        return full + (1 if rest >= 2 else 0)

    def epoch(self, generator: torch.Generator) -> Iterator[PairBatch]:
        order = torch.randperm(len(self.data), generator=generator).numpy()
        for step in range(len(self)):
            idx = np.sort(order[step * self.batch_size:(step + 1) * self.batch_size])
            rows = self.text.rows_for(idx, generator)
            images = to_float_images(self.data.images[idx], self.preprocess)
            if self.augment:
                images = random_low_resolution(random_shift(images, self.max_shift, generator), generator)
            labels = torch.from_numpy(self.data.labels[idx]) if self.data.labels is not None else None
            if self.text.features is not None:  # a frozen tower: its cached output, no tokens
                yield PairBatch(images, {}, torch.from_numpy(idx), labels, self.text.features[rows])
            else:
                yield PairBatch(images, self.text.select(rows), torch.from_numpy(idx), labels)
