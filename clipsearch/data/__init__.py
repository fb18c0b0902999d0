"""Data for training and evaluation: the embedded digits or a user's files, decoded once."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .imageset import ImageTextSet

EMBEDDED = "embedded"
#: zero-shot prompt templates for real data (the embedded digits have their own, see embedded.py)
GENERIC_PROMPTS = ["a photo of a {}.", "a picture of a {}.", "an image of a {}.", "{}"]
#: the named values of data.zeroshot_templates; any other value is a template file
TEMPLATE_SETS = ("auto", "generic", "openai", "simple")


@dataclass
class EvalSets:
    retrieval: ImageTextSet        # images with several captions each
    zeroshot: ImageTextSet         # images with labels and class_names
    prompts: list[str]             # zero-shot templates with one {} for the class name


#: data.val_source when it is unset and data.source is a user's: a share of their own pairs
HELD_OUT = "held-out share of data.source"


def retrieval_source(data_cfg) -> str:
    """What the retrieval set is: data.val_source when given, else 'embedded' for the embedded
    training pairs and HELD_OUT for a user's (never the digits unasked)."""
    if data_cfg.val_source is not None:
        return data_cfg.val_source
    return EMBEDDED if data_cfg.source == EMBEDDED else HELD_OUT


def zeroshot_source(data_cfg) -> str:
    """data.zeroshot_source when given, else 'embedded' for the embedded training pairs. A user's
    pairs have no classes to fall back on, and the objective needs ACC@1: then InputError."""
    from ..errors import InputError

    if data_cfg.zeroshot_source is not None:
        return data_cfg.zeroshot_source
    if data_cfg.source == EMBEDDED:
        return EMBEDDED
    raise InputError("data.source is your own pairs but no zero-shot set is given, and the objective "
                     "(TR@1 + IR@1 + ACC@1) / 3 needs one", where="data.zeroshot_source",
                     fix="set data.zeroshot_source to an ImageFolder tree of labelled images (root/<class>/*, "
                         "e.g. ImageNet val), or to 'embedded' to classify the built-in 8x8 digits")


def heldout_split(pairs: ImageTextSet, fraction: float) -> tuple[ImageTextSet, ImageTextSet]:
    """(training, held-out) parts of `pairs`: the last round(fraction * n) images (at least one)
    are held out, the rest train. Split by image, so no image and none of its captions is in
    both. Two slices, not a random draw: a memmapped set stays a lazy view (a random subset of
    100k 224 px images would copy 15 GB into memory), and data.fraction's prefix of the
    training part nests inside it."""
    from ..errors import InputError

    held = max(1, round(fraction * len(pairs)))
    if held >= len(pairs):
        raise InputError(f"data.source has {len(pairs)} images: too few to hold out {fraction:g} of them for "
                         "retrieval and train on the rest", where="data.val_fraction",
                         fix="give more pairs, or a separate retrieval set with data.val_source")
    cut = len(pairs) - held
    return pairs.subset(np.arange(cut)), pairs.subset(np.arange(cut, len(pairs)))


def _user_pairs(data_cfg) -> ImageTextSet:
    from .readers import load_image_text_set

    return load_image_text_set(data_cfg.source, data_cfg.image_size, data_cfg.cache_dir,
                               image_root=data_cfg.image_root, on_corrupt=data_cfg.on_corrupt)


def load_training_set(data_cfg) -> ImageTextSet:
    """The training pairs, with `data.fraction` applied (deterministic, nested subsets); without a
    data.val_source, a user's pairs lose the share `heldout_split` keeps for retrieval."""
    from .embedded import mnist_splits, subset_fraction

    if data_cfg.source == EMBEDDED:
        train, _ = mnist_splits(data_cfg.image_size)
    else:
        train = _user_pairs(data_cfg)
        if retrieval_source(data_cfg) == HELD_OUT:
            train, _ = heldout_split(train, data_cfg.val_fraction)
    return subset_fraction(train, data_cfg.fraction)


def load_eval_sets(data_cfg) -> EvalSets:
    from .embedded import mnist_splits, sklearn_digits

    source = retrieval_source(data_cfg)
    if source == EMBEDDED:
        _, retrieval = mnist_splits(data_cfg.image_size)
    elif source == HELD_OUT:
        pairs = _user_pairs(data_cfg)
        retrieval = heldout_split(pairs, data_cfg.val_fraction)[1]
        captions = sum(len(c) for c in retrieval.captions)
        print(f"clipsearch: retrieval is evaluated on the last {data_cfg.val_fraction * 100:g}% of {data_cfg.source}'s "
              f"images ({len(retrieval)} of {len(pairs)}, {captions} captions), held out from training "
              "(data.val_fraction; data.val_source=FILE evaluates on a separate set)", file=sys.stderr)
    else:
        from .readers import load_coco_set

        retrieval = load_coco_set(source, data_cfg.image_size, data_cfg.cache_dir,
                                  image_root=data_cfg.val_image_root, on_corrupt=data_cfg.on_corrupt)
    if zeroshot_source(data_cfg) == EMBEDDED:
        zeroshot = sklearn_digits(data_cfg.image_size)
    else:
        from .readers import load_image_folder_set

        zeroshot = load_image_folder_set(zeroshot_source(data_cfg), data_cfg.image_size, data_cfg.cache_dir,
                                         on_corrupt=data_cfg.on_corrupt, class_names=data_cfg.zeroshot_classnames)
    return EvalSets(retrieval, zeroshot, zeroshot_templates(data_cfg))


def zeroshot_templates(data_cfg) -> list[str]:
    """The prompt templates `data.zeroshot_templates` names, each with one {} for the class name.

    auto: the embedded digits' own prompts for zeroshot_source 'embedded', else generic;
    generic: GENERIC_PROMPTS; openai: the 80 templates OpenAI's CLIP used for ImageNet; simple:
    CLIP's 7 of those (both as open_clip ships them); anything else: a template file.
    """
    from .embedded import PROMPTS

    spec = data_cfg.zeroshot_templates
    if spec == "auto":
        return list(PROMPTS if zeroshot_source(data_cfg) == EMBEDDED else GENERIC_PROMPTS)
    if spec == "generic":
        return list(GENERIC_PROMPTS)
    if spec in ("openai", "simple"):
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

        chosen = OPENAI_IMAGENET_TEMPLATES if spec == "openai" else SIMPLE_IMAGENET_TEMPLATES
        return [template("{}") for template in chosen]  # open_clip's are functions, ours format strings
    return read_template_file(spec)


def read_template_file(path: str, key: str = "data.zeroshot_templates") -> list[str]:
    """Templates from a UTF-8 text file, one a line; each must take the class name at one {}."""
    from ..errors import InputError
    from .readers import read_setting_file

    templates = []
    for number, template in read_setting_file(path, key, ", ".join(TEMPLATE_SETS)):
        try:
            filled = template.format("\0")
        except (IndexError, KeyError, ValueError):
            filled = ""  # more than one {}, a {name}, or a lone brace
        if filled.count("\0") != 1:
            raise InputError(f"{template!r} is not a template with one {{}} for the class name",
                             where=f"{key}={path} line {number}",
                             fix="write {} once where the class name goes, e.g. 'a photo of a {}.', and "
                                 "double any other brace ({{ or }})")
        templates.append(template)
    return templates


def check_sources(data_cfg, image_text: bool = False) -> None:
    """Fail fast, before models are built, on data paths that do not exist and zero-shot class
    names or templates that cannot be used; with `image_text`, also on evaluation sets that do
    not go with data.source (`check_eval_sources`: the image-only task shares data.source but
    has no retrieval or zero-shot set)."""
    from ..errors import InputError

    for key in ("source", "val_source", "zeroshot_source"):
        value = getattr(data_cfg, key)
        if value is not None and value != EMBEDDED and not any(ch in value for ch in "{*") \
                and not Path(value).exists():
            raise InputError(f"data file not found: {value}", where=f"data.{key}",
                             fix=f"give an existing path, or '{EMBEDDED}' for the built-in digits")
    if image_text:
        check_eval_sources(data_cfg)
    check_zeroshot_naming(data_cfg)


def check_eval_sources(data_cfg) -> None:
    """What the data keys alone can get wrong about image-text evaluation (reads no file): a
    user's pairs without a zero-shot set, and a val_image_root without its val_source."""
    from ..errors import InputError

    zeroshot_source(data_cfg)
    if data_cfg.val_image_root is not None and data_cfg.val_source in (None, EMBEDDED):
        raise InputError("data.val_image_root is where a data.val_source file's images lie, and no such file is "
                         "given", where="data.val_image_root",
                         fix="set data.val_source to the captions file, or drop data.val_image_root")


def check_zeroshot_naming(data_cfg) -> None:
    """Fail fast on zero-shot class names or templates that cannot be used (reads no image)."""
    from ..errors import InputError
    from .readers import folder_class_names, image_folder_classes

    if data_cfg.zeroshot_source is None and data_cfg.source != EMBEDDED:
        return  # no zero-shot set to name (image-only data; image-text training: check_eval_sources)
    zeroshot_templates(data_cfg)
    if zeroshot_source(data_cfg) != EMBEDDED:
        folders = [folder.name for folder in image_folder_classes(zeroshot_source(data_cfg))]
        folder_class_names(folders, data_cfg.zeroshot_classnames)
    elif data_cfg.zeroshot_classnames != "auto":
        raise InputError("class names apply to an ImageFolder data.zeroshot_source; the embedded digits are "
                         "named zero to nine", where="data.zeroshot_classnames",
                         fix="leave it auto, or set data.zeroshot_source to an ImageFolder tree")


__all__ = ["EMBEDDED", "HELD_OUT", "EvalSets", "ImageTextSet", "check_eval_sources", "check_sources",
           "check_zeroshot_naming", "heldout_split", "load_eval_sets", "load_training_set", "retrieval_source",
           "zeroshot_source", "zeroshot_templates"]
