"""Data for training and evaluation: the embedded digits or a user's files, decoded once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    from .embedded import mnist_splits, sklearn_digits

    if data_cfg.val_source == EMBEDDED:
        _, retrieval = mnist_splits(data_cfg.image_size)
    else:
        from .readers import load_coco_set

        retrieval = load_coco_set(data_cfg.val_source, data_cfg.image_size, data_cfg.cache_dir,
                                  image_root=data_cfg.val_image_root, on_corrupt=data_cfg.on_corrupt)
    if data_cfg.zeroshot_source == EMBEDDED:
        zeroshot = sklearn_digits(data_cfg.image_size)
    else:
        from .readers import load_image_folder_set

        zeroshot = load_image_folder_set(data_cfg.zeroshot_source, data_cfg.image_size, data_cfg.cache_dir,
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
        return list(PROMPTS if data_cfg.zeroshot_source == EMBEDDED else GENERIC_PROMPTS)
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


def check_sources(data_cfg) -> None:
    """Fail fast, before models are built, on data paths that do not exist and zero-shot class
    names or templates that cannot be used."""
    from ..errors import InputError

    for key in ("source", "val_source", "zeroshot_source"):
        value = getattr(data_cfg, key)
        if value != EMBEDDED and not any(ch in value for ch in "{*") and not Path(value).exists():
            raise InputError(f"data file not found: {value}", where=f"data.{key}",
                             fix=f"give an existing path, or '{EMBEDDED}' for the built-in digits")
    check_zeroshot_naming(data_cfg)


def check_zeroshot_naming(data_cfg) -> None:
    """Fail fast on zero-shot class names or templates that cannot be used (reads no image)."""
    from ..errors import InputError
    from .readers import folder_class_names, image_folder_classes

    zeroshot_templates(data_cfg)
    if data_cfg.zeroshot_source != EMBEDDED:
        folders = [folder.name for folder in image_folder_classes(data_cfg.zeroshot_source)]
        folder_class_names(folders, data_cfg.zeroshot_classnames)
    elif data_cfg.zeroshot_classnames != "auto":
        raise InputError("class names apply to an ImageFolder data.zeroshot_source; the embedded digits are "
                         "named zero to nine", where="data.zeroshot_classnames",
                         fix="leave it auto, or set data.zeroshot_source to an ImageFolder tree")


__all__ = ["EMBEDDED", "EvalSets", "ImageTextSet", "check_sources", "check_zeroshot_naming", "load_eval_sets",
           "load_training_set", "zeroshot_templates"]
