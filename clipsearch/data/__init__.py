"""Data for training and evaluation: the embedded digits or a user's files, decoded once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .imageset import ImageTextSet

EMBEDDED = "embedded"
#: zero-shot prompt templates for real data (the embedded digits have their own, see embedded.py)
GENERIC_PROMPTS = ["a photo of a {}.", "a picture of a {}.", "an image of a {}.", "{}"]


@dataclass
class EvalSets:
    retrieval: ImageTextSet        # images with several captions each
    zeroshot: ImageTextSet         # images with labels and class_names
    prompts: list[str]             # zero-shot templates with one {} for the class name


def load_training_set(data_cfg) -> ImageTextSet:
    """The training pairs, with `data.fraction` applied (deterministic, nested subsets)."""
    from .embedded import mnist_splits, subset_fraction

    if data_cfg.source == EMBEDDED:
        train, _ = mnist_splits(data_cfg.image_size)
    else:
        from .readers import load_image_text_set

        train = load_image_text_set(data_cfg.source, data_cfg.image_size, data_cfg.cache_dir,
                                    image_root=data_cfg.image_root, on_corrupt=data_cfg.on_corrupt)
    return subset_fraction(train, data_cfg.fraction)


def load_eval_sets(data_cfg) -> EvalSets:
    from .embedded import PROMPTS, mnist_splits, sklearn_digits

    if data_cfg.val_source == EMBEDDED:
        _, retrieval = mnist_splits(data_cfg.image_size)
    else:
        from .readers import load_coco_set

        retrieval = load_coco_set(data_cfg.val_source, data_cfg.image_size, data_cfg.cache_dir,
                                  image_root=data_cfg.val_image_root, on_corrupt=data_cfg.on_corrupt)
    if data_cfg.zeroshot_source == EMBEDDED:
        zeroshot, prompts = sklearn_digits(data_cfg.image_size), PROMPTS
    else:
        from .readers import load_image_folder_set

        zeroshot = load_image_folder_set(data_cfg.zeroshot_source, data_cfg.image_size, data_cfg.cache_dir,
                                         on_corrupt=data_cfg.on_corrupt)
        prompts = GENERIC_PROMPTS
    return EvalSets(retrieval, zeroshot, list(prompts))


def check_sources(data_cfg) -> None:
    """Fail fast, before models are built, on data paths that do not exist."""
    from ..errors import InputError

    for key in ("source", "val_source", "zeroshot_source"):
        value = getattr(data_cfg, key)
        if value != EMBEDDED and not any(ch in value for ch in "{*") and not Path(value).exists():
            raise InputError(f"data file not found: {value}", where=f"data.{key}",
                             fix=f"give an existing path, or '{EMBEDDED}' for the built-in digits")


__all__ = ["EMBEDDED", "EvalSets", "ImageTextSet", "check_sources", "load_eval_sets", "load_training_set"]
