"""Readers for the image data a clipsearch user brings, each ending in an `ImageTextSet`.

Accepted inputs (`load_image_text_set` picks the reader from the path):

- Caption rows, one {image, caption} pair per row (CC3M-style, or the course format
  {"image", "caption", "image_id"}), as a .json list of objects, .jsonl (one object per
  line), .csv or .tsv (with a header line). Column names are matched case-insensitively:
  image: the first present of IMAGE_COLUMNS (image, filepath, file, image_path);
  caption: the first present of CAPTION_COLUMNS (caption, text, title);
  optional image_id: rows with the same id are one image with several captions (without
  it, rows with the same image path are). Relative image paths are resolved against
  image_root (default: the caption file's folder).
- COCO-style captions .json: the Karpathy split form {"images": [{"filename", "filepath"?,
  "sentences": [{"raw"}], "split"}]} or the official form {"images": [{"id", "file_name"}],
  "annotations": [{"image_id", "caption"}]}.
- webdataset tar shards as img2dataset writes them (KEY.jpg|jpeg|png|webp + KEY.txt caption
  + optional KEY.json): a .tar path, a brace pattern (shards/{00000..00009}.tar), a glob, a
  folder of .tar files, or a list of these.
- An ImageFolder tree root/<class>/**/<image> (ImageNet val layout): `load_image_folder_set`.
  Class names are the folder names, ImageNet's names for folders named by WordNet id, or the
  lines of a class-name file (`folder_class_names`).

Text files must be UTF-8 (a byte-order mark is allowed). A file in another encoding is
refused with the line of the first bad byte rather than read as latin-1: latin-1 decodes any
bytes, so a cp1252 or mixed file would silently become garbled captions to train on.

Every mistake a user can fix raises `InputError` naming the file (and row, key or member).
"""

from __future__ import annotations

import csv
import functools
import glob
import itertools
import json
import os
import re
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
from braceexpand import braceexpand

from ..errors import InputError
from .cache import SKIP_FIX, DecodedImages, decode_images
from .imageset import ImageTextSet

IMAGE_COLUMNS = ("image", "filepath", "file", "image_path")
CAPTION_COLUMNS = ("caption", "text", "title")
ID_COLUMN = "image_id"
#: ImageFolder files read as images (case-insensitive); others are ignored, as are hidden
#: files such as macOS's "._photo.jpg" resource forks, which are not images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: image members of a webdataset sample, in order of preference when a key has several
WEBDATASET_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
#: an ImageNet class folder's name in the val layout: a WordNet noun id, e.g. n01440764
WORDNET_ID = re.compile(r"n\d{8}")

PathLike = Union[str, os.PathLike]


class CaptionRow(NamedTuple):
    """One {image, caption} row. `where` names the file and row for messages."""

    image: str
    caption: str
    image_id: str | None = None
    where: str = ""


# --------------------------------------------------------------------------- entry points


def load_image_text_set(
    path: PathLike | Sequence[PathLike],
    image_size: int,
    cache_dir: PathLike,
    image_root: PathLike | None = None,
    on_corrupt: str = "error",
    progress: bool = True,
    split: str | Sequence[str] | None = None,
) -> ImageTextSet:
    """Read image-text pairs from any accepted form (module docstring) and decode the images.

    image_root: where relative image paths start (default: the caption file's folder).
    split: Karpathy-split COCO files only: keep images of this split (or these splits).
    Returns an ImageTextSet with images (N, image_size, image_size, 3) and no labels.
    """
    return _load_pairs(path, image_size, cache_dir, image_root, on_corrupt, progress, split,
                       karpathy_only=False)


def load_coco_set(
    path: PathLike | Sequence[PathLike],
    image_size: int,
    cache_dir: PathLike,
    image_root: PathLike | None = None,
    on_corrupt: str = "error",
    progress: bool = True,
    split: str | Sequence[str] | None = "test",
) -> ImageTextSet:
    """A retrieval validation set, several captions per image.

    Like `load_image_text_set`, but `split` (default: "test", Karpathy's 5,000-image test
    split) applies only when the file is a Karpathy-split COCO file; every other form
    (official COCO captions, caption rows, shards) is read whole.
    """
    return _load_pairs(path, image_size, cache_dir, image_root, on_corrupt, progress, split,
                       karpathy_only=True)


def _load_pairs(
    path: PathLike | Sequence[PathLike], image_size: int, cache_dir: PathLike,
    image_root: PathLike | None, on_corrupt: str, progress: bool,
    split: str | Sequence[str] | None, karpathy_only: bool,
) -> ImageTextSet:
    """karpathy_only: apply `split` to Karpathy-split files and ignore it for other forms,
    instead of refusing it there."""
    if _is_shard_spec(path):
        if split is not None and not karpathy_only:
            raise InputError("webdataset shards have no splits", where=str(path),
                             fix="leave split unset, or name the split's shards")
        return read_webdataset(path, image_size, cache_dir, on_corrupt, progress)
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    paths, captions = _read_caption_file(path, root, split, karpathy_only)
    return _decode_set(paths, captions, root, image_size, cache_dir, on_corrupt, progress)


def _read_caption_file(
    path: Path, root: Path, split: str | Sequence[str] | None, karpathy_only: bool
) -> tuple[list[str], list[list[str]]]:
    """(image paths, captions per image) of a caption-row or COCO file."""
    suffix = path.suffix.lower()
    if suffix not in CAPTION_FILE_SUFFIXES:
        raise InputError(
            "not a data set clipsearch reads", where=str(path),
            fix="pass a caption file (.json, .jsonl, .csv, .tsv), a COCO captions .json, or "
                "webdataset .tar shards (a .tar, a brace pattern, a glob or a folder of .tar)",
        )
    data = _load_json(path) if suffix == ".json" else None
    if _is_coco(data):
        if karpathy_only and "annotations" in data:
            split = None
        return _coco_captions(data, path, root, split)
    if split is not None and not karpathy_only:
        raise InputError("a split applies to Karpathy-split COCO files only", where=str(path),
                         fix="leave split unset for caption-row files")
    rows = _rows_from_json(data, path) if suffix == ".json" else read_caption_rows(path)
    return group_by_image(rows, root)


def load_image_folder_set(
    root: PathLike,
    image_size: int,
    cache_dir: PathLike,
    on_corrupt: str = "error",
    progress: bool = True,
    min_classes: int = 1,
    class_names: str = "folders",
) -> ImageTextSet:
    """An ImageFolder tree root/<class>/**/<image> as an ImageTextSet.

    labels: int64 class ids in sorted class-folder order; class_names: each folder's name as
    `class_names` says (`folder_class_names`: "folders", "imagenet", "auto" or a file);
    captions: [class name] per image (prompts are the caller's business).
    """
    paths, labels, folders = read_image_folder(root, min_classes)
    class_names = folder_class_names(folders, class_names)
    captions = [[class_names[label]] for label in labels]
    return _decode_set(paths, captions, Path(root), image_size, cache_dir, on_corrupt, progress,
                       labels=labels, class_names=class_names)


def _decode_set(
    paths: list[str], captions: list[list[str]], root: Path, image_size: int,
    cache_dir: PathLike, on_corrupt: str, progress: bool,
    labels: np.ndarray | None = None, class_names: list[str] | None = None,
) -> ImageTextSet:
    decoded = decode_images(paths, image_size, cache_dir, on_corrupt, progress)
    names = [_display_name(path, root) for path in paths]
    return _kept_set(decoded, captions, names, labels, class_names)


def _kept_set(
    decoded: DecodedImages, captions: list[list[str]], names: list[str],
    labels: np.ndarray | None = None, class_names: list[str] | None = None,
    skipped_before: Sequence[str] = (),
) -> ImageTextSet:
    kept = decoded.kept
    return ImageTextSet(
        images=decoded.images,
        captions=[captions[i] for i in kept],
        names=[names[i] for i in kept],
        labels=None if labels is None else labels[kept],
        class_names=class_names,
        skipped=[*skipped_before, *decoded.skipped],
    )


def _display_name(path: str, root: Path) -> str:
    """The image path relative to the data root when it lies under it, else as resolved."""
    relative = os.path.relpath(path, root)
    outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
    return path if outside else relative


# --------------------------------------------------------------------------- caption rows


def read_caption_rows(path: PathLike) -> list[CaptionRow]:
    """{image, caption[, image_id]} rows from a .json list, .jsonl, .csv or .tsv file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        rows = _rows_from_json(_load_json(path), path)
    elif suffix == ".jsonl":
        rows = [_caption_row(record, where) for where, record in _jsonl_records(path)]
    elif suffix in (".csv", ".tsv"):
        rows = [_caption_row(record, where) for where, record in _csv_records(path)]
    else:
        raise InputError(
            "unknown caption file type", where=str(path),
            fix="use a .json list of objects, .jsonl, .csv or .tsv file",
        )
    if not rows:
        raise InputError("holds no caption rows", where=str(path),
                         fix="add {image, caption} rows")
    return rows


def _rows_from_json(data: Any, path: Path) -> list[CaptionRow]:
    if not isinstance(data, list):
        found = f"an object with keys {sorted(data)[:8]}" if isinstance(data, dict) else (
            type(data).__name__)
        raise InputError(
            f"expected a list of {{image, caption}} objects, found {found}", where=str(path),
            fix="write a JSON list of rows, or a COCO captions file with 'images' (and "
                "'annotations' or 'sentences')",
        )
    rows = []
    for index, record in enumerate(data):
        where = f"{path} item [{index}]"
        if not isinstance(record, dict):
            raise InputError(f"expected an object, found {type(record).__name__}", where=where,
                             fix='make each item {"image": ..., "caption": ...}')
        rows.append(_caption_row(record, where))
    return rows


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict]]:
    with _open_text(path) as handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():  # blank lines (a trailing newline, say) are no rows
                    yield _jsonl_record(line, f"{path} line {number}")
        except UnicodeDecodeError:
            raise _encoding_error(path) from None


def _jsonl_record(line: str, where: str) -> tuple[str, dict]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", where=where,
                         fix="write one JSON object per line") from None
    if not isinstance(record, dict):
        raise InputError(f"expected an object, found {type(record).__name__}", where=where,
                         fix='write one {"image": ..., "caption": ...} object per line')
    return where, record


def _csv_records(path: Path) -> Iterator[tuple[str, dict]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with _open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        try:
            for record in reader:
                yield f"{path} line {reader.line_num}", record
        except UnicodeDecodeError:
            raise _encoding_error(path) from None
        except csv.Error as exc:
            raise InputError(f"not valid CSV ({exc})", where=f"{path} line {reader.line_num}",
                             fix="quote fields that hold the delimiter or newlines") from None


def _caption_row(record: dict, where: str) -> CaptionRow:
    """Check one row's columns and values; `where` names it in messages."""
    by_name = {str(key).strip().lower(): value for key, value in record.items() if key}
    image_key = next((name for name in IMAGE_COLUMNS if name in by_name), None)
    caption_key = next((name for name in CAPTION_COLUMNS if name in by_name), None)
    if image_key is None or caption_key is None:
        raise _columns_error(list(by_name), where)
    image = _text_value(by_name[image_key], image_key, where)
    caption = _text_value(by_name[caption_key], caption_key, where)
    image_id = by_name.get(ID_COLUMN)
    image_id = None if image_id in (None, "") else str(image_id).strip()
    return CaptionRow(image=image, caption=caption, image_id=image_id, where=where)


def _text_value(value: Any, column: str, where: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"empty {column!r}", where=where,
                         fix=f"give every row a non-empty {column!r} or remove the row")
    if not isinstance(value, str):
        raise InputError(f"{column!r} is a {type(value).__name__}, expected a string",
                         where=where, fix=f"write {column!r} as a string, one per row")
    return value.strip()


def _columns_error(found: list[str], where: str) -> InputError:
    fix = (f"name the image column one of {', '.join(IMAGE_COLUMNS)} and the caption column "
           f"one of {', '.join(CAPTION_COLUMNS)} (optional: {ID_COLUMN})")
    if "url" in found and not any(name in found for name in IMAGE_COLUMNS):
        fix += ("; a url column means the images are not downloaded yet: fetch them with "
                "img2dataset and pass its .tar shards")
    return InputError(f"missing columns; found: {', '.join(found) or 'none'}", where=where,
                      fix=fix)


def group_by_image(
    rows: Sequence[CaptionRow], image_root: PathLike
) -> tuple[list[str], list[list[str]]]:
    """Rows grouped into images: (image paths, captions per image), in first-seen order.

    Rows share an image when they share an image_id, or, without one, the same image path.
    Relative paths are resolved against image_root; every image file must exist.
    """
    root = Path(image_root)
    position: dict[tuple[str, str], int] = {}
    paths: list[str] = []
    wheres: list[str] = []
    captions: list[list[str]] = []
    for row in rows:
        path = _resolve(row.image, root)
        key = ("id", row.image_id) if row.image_id is not None else ("path", path)
        if key not in position:
            position[key] = len(paths)
            paths.append(path)
            wheres.append(row.where)
            captions.append([])
        elif paths[position[key]] != path:
            raise InputError(
                f"image_id {row.image_id!r} names two images: {paths[position[key]]} and {path}",
                where=row.where, fix="give each image its own image_id",
            )
        captions[position[key]].append(row.caption)
    _check_images_exist(paths, wheres, root)
    return paths, captions


def _resolve(image: str, root: Path) -> str:
    return os.path.normpath(os.path.join(root, os.path.expanduser(image)))


def _check_images_exist(paths: list[str], wheres: list[str], root: Path) -> None:
    missing = [i for i, path in enumerate(paths) if not os.path.isfile(path)]
    if missing:
        first = missing[0]
        raise InputError(
            f"image file not found ({len(missing)} of {len(paths)} images missing; first named "
            f"in {wheres[first]})", where=paths[first],
            fix=f"check the paths and image_root: relative image paths start at {root}",
        )


# --------------------------------------------------------------------------- COCO captions


def read_coco_captions(
    path: PathLike, image_root: PathLike | None = None, split: str | Sequence[str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """(image paths, captions per image) from a COCO-style captions .json.

    Karpathy form: image path = image_root/filepath/filename; `split` keeps only images whose
    "split" is that value (or one of those values). Official form (captions_val2017.json):
    image path = image_root/file_name; it has no splits. Images without a caption are
    dropped with a warning. image_root defaults to the .json's folder.
    """
    path = Path(path)
    data = _load_json(path)
    if not _is_coco(data):
        raise InputError(
            "not a COCO captions file (expected an object with 'images')", where=str(path),
            fix="use a Karpathy split file or an official captions_*.json",
        )
    root = Path(image_root) if image_root is not None else path.parent
    return _coco_captions(data, path, root, split)


def _is_coco(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("images"), list)


def _coco_captions(
    data: dict, path: Path, root: Path, split: str | Sequence[str] | None
) -> tuple[list[str], list[list[str]]]:
    if "annotations" in data:
        if split is not None:
            raise InputError(
                "an official COCO captions file has no splits", where=str(path),
                fix="leave split unset (the file is one split already) or use a Karpathy file",
            )
        entries = _official_coco_entries(data, path)
    else:
        entries = _karpathy_entries(data, path, split)
    entries = _drop_uncaptioned(entries, path)
    paths = [_resolve(relative, root) for relative, _, _ in entries]
    _check_images_exist(paths, [where for _, _, where in entries], root)
    return paths, [captions for _, captions, _ in entries]


def _karpathy_entries(
    data: dict, path: Path, split: str | Sequence[str] | None
) -> list[tuple[str, list[str], str]]:
    """(relative image path, captions, where) per image of the wanted splits."""
    wanted = {split} if isinstance(split, str) else (None if split is None else set(split))
    entries, splits_found = [], set()
    for index, image in enumerate(data["images"]):
        where = f"{path} images[{index}]"
        _require_object(image, where)
        splits_found.add(image.get("split"))
        if wanted is not None and image.get("split") not in wanted:
            continue
        name = image.get("filename") or image.get("file_name")
        if not isinstance(name, str) or not name:
            raise InputError("image without a 'filename'", where=where,
                             fix="give every image a 'filename' (and 'filepath' if in a folder)")
        captions = [_sentence_text(sentence) for sentence in image.get("sentences", [])]
        relative = os.path.join(image.get("filepath") or "", name)
        entries.append((relative, [c for c in captions if c], where))
    if wanted is not None and not entries:
        raise InputError(
            f"no images in split {sorted(wanted)}", where=str(path),
            fix=f"use one of the splits in the file: {sorted(map(str, splits_found))}",
        )
    return entries


def _sentence_text(sentence: Any) -> str:
    if not isinstance(sentence, dict):
        return ""
    raw = sentence.get("raw") or " ".join(sentence.get("tokens") or [])
    return raw.strip() if isinstance(raw, str) else ""


def _official_coco_entries(data: dict, path: Path) -> list[tuple[str, list[str], str]]:
    entries, position = [], {}
    for index, image in enumerate(data["images"]):
        where = f"{path} images[{index}]"
        _require_object(image, where)
        if "id" not in image or not isinstance(image.get("file_name"), str):
            raise InputError("image without 'id' and 'file_name'", where=where,
                             fix="give every image its 'id' and 'file_name'")
        position[image["id"]] = len(entries)
        entries.append((image["file_name"], [], where))
    for index, annotation in enumerate(data["annotations"]):
        where = f"{path} annotations[{index}]"
        _require_object(annotation, where)
        at = position.get(annotation.get("image_id"))
        if at is None:
            raise InputError(f"image_id {annotation.get('image_id')!r} is not in 'images'",
                             where=where, fix="add the image or remove the annotation")
        caption = annotation.get("caption")
        entries[at][1].append(_text_value(caption, "caption", where))
    return entries


def _require_object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise InputError(f"expected an object, found {type(value).__name__}", where=where,
                         fix="follow the COCO captions layout")


def _drop_uncaptioned(entries: list, path: Path) -> list:
    kept = [entry for entry in entries if entry[1]]
    if len(kept) < len(entries):
        warnings.warn(f"{path}: dropped {len(entries) - len(kept)} images without a caption",
                      stacklevel=4)
    if not kept:
        raise InputError("no image has a caption", where=str(path), fix="add captions")
    return kept


# --------------------------------------------------------------------------- ImageFolder


def read_image_folder(
    root: PathLike, min_classes: int = 1
) -> tuple[list[str], np.ndarray, list[str]]:
    """(image paths, int64 labels, class names) from root/<class>/**/<image>.

    Classes are the non-hidden sub-folders of root, sorted by name; images are files with
    an IMAGE_EXTENSIONS suffix anywhere below a class folder, sorted. Symbolic links are
    followed, but each real folder is read once, so a link loop cannot hang the walk.
    """
    root = Path(root)
    class_dirs = image_folder_classes(root, min_classes)
    root_identity = _identity(root)
    paths, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = _image_files_under(class_dir, {root_identity})
        if not files:
            raise InputError(
                f"class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})",
                where=str(class_dir), fix="add images to it or remove the folder",
            )
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), [d.name for d in class_dirs]


def image_folder_classes(root: PathLike, min_classes: int = 1) -> list[Path]:
    """The class folders of an ImageFolder tree: root's non-hidden sub-folders, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder" if root.exists() else "folder not found",
                         where=str(root), fix="pass the root of a root/<class>/<image> tree")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(class_dirs) < max(1, min_classes):
        raise InputError(
            f"found {len(class_dirs)} class folders, need at least {max(1, min_classes)}",
            where=str(root), fix="arrange images as root/<class name>/<image>.jpg",
        )
    return class_dirs


def _image_files_under(folder: Path, seen: set[tuple[int, int]]) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        identity = _identity(dirpath)
        if identity in seen:
            dirnames[:] = []  # a link back to a folder already read: a loop or a duplicate
            continue
        seen.add(identity)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, name) for name in sorted(filenames) if _is_image(name)]
    return found


def _identity(folder: PathLike) -> tuple[int, int]:
    stat = os.stat(folder)
    return stat.st_dev, stat.st_ino


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- class names


def folder_class_names(folders: Sequence[str], spec: str, key: str = "data.zeroshot_classnames") -> list[str]:
    """The class name of each class folder, as `spec` says.

    "folders": the folder names; "imagenet": ImageNet's class names of folders named by WordNet
    id, as ImageNet's val layout names them (n01440764 -> tench); "auto": imagenet when every
    folder is an ImageNet-1k WordNet id, else folders; anything else: a class-name file
    (`read_class_name_file`). `key` is the setting that messages name.
    """
    if spec == "folders":
        return list(folders)
    if spec not in ("auto", "imagenet"):
        return read_class_name_file(spec, folders, key)
    # the pattern first: folders that cannot be WordNet ids need no look-up (and no imports)
    unknown = [f for f in folders if not WORDNET_ID.fullmatch(f) or f not in imagenet_class_names()]
    if not unknown:
        return [imagenet_class_names()[f] for f in folders]
    if spec == "auto":
        return list(folders)
    raise InputError(
        f"{len(unknown)} of {len(folders)} class folders are not ImageNet-1k WordNet ids "
        f"(first: {unknown[0]!r})", where=f"{key}=imagenet",
        fix=f"name the folders by WordNet id (n01440764), or set {key}=folders or a class-name file",
    )


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> dict[str, str]:
    """ImageNet-1k's WordNet id -> class name, for its 1,000 classes.

    The ids are timm's ImageNet-1k synsets, sorted: the class index order of ImageNet
    classifiers (torchvision's ImageFolder order of the train and val folders). The names are
    open_clip's IMAGENET_CLASSNAMES, the names OpenAI's CLIP wrote for zero-shot ImageNet
    ("tench", "kite (bird of prey)"), in that index order. Both ship inside installed wheels.
    """
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from timm.data import ImageNetInfo

    wnids = ImageNetInfo("imagenet-1k").label_names()
    if len(wnids) != len(IMAGENET_CLASSNAMES) or wnids != sorted(wnids):
        raise RuntimeError(f"timm's {len(wnids)} ImageNet-1k ids do not line up with open_clip's "
                           f"{len(IMAGENET_CLASSNAMES)} class names: check the installed versions")
    return dict(zip(wnids, IMAGENET_CLASSNAMES))


def read_class_name_file(path: PathLike, folders: Sequence[str], key: str) -> list[str]:
    """Class names from a UTF-8 text file: one name a line in sorted class-folder order, or
    FOLDER<TAB>NAME lines (timm's imagenet_synset_to_lemma.txt is one) naming every folder."""
    lines = read_setting_file(path, key, "auto, folders, imagenet")
    where = f"{key}={path}"
    tabbed = ["\t" in text for _, text in lines]
    if any(tabbed) and not all(tabbed):
        number = lines[tabbed.index(False)][0]
        raise InputError("mixes FOLDER<TAB>NAME lines with plain names", where=f"{where} line {number}",
                         fix="write every line as FOLDER<TAB>NAME, or every line as a name alone")
    if not all(tabbed):
        if len(lines) != len(folders):
            raise InputError(
                f"{len(lines)} class names for {len(folders)} class folders", where=where,
                fix=f"write one name a line in sorted folder order (first folder: {folders[0]}), "
                    "or FOLDER<TAB>NAME lines")
        return [text for _, text in lines]
    names = {folder.strip(): name.strip() for folder, _, name in (text.partition("\t") for _, text in lines)}
    missing = [folder for folder in folders if not names.get(folder)]
    if missing:
        raise InputError(f"no name for class folder {missing[0]!r} ({len(missing)} of {len(folders)} "
                         "folders unnamed)", where=where, fix="add a FOLDER<TAB>NAME line for each class folder")
    return [names[folder] for folder in folders]


def read_setting_file(path: PathLike, key: str, keywords: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of each non-blank line of the UTF-8 text file a setting
    names; `keywords` are the setting's other values, for the message when there is no file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{os.fspath(path)!r} is none of {keywords}, and no such file", where=key,
                         fix=f"use one of {keywords}, or the path of a UTF-8 text file")
    with _open_text(path) as handle:
        try:
            lines = [(number, line.strip()) for number, line in enumerate(handle, start=1) if line.strip()]
        except UnicodeDecodeError:
            error = _encoding_error(path)
            raise InputError(error.what, where=f"{key}={path}", fix=error.fix) from None
    if not lines:
        raise InputError("the file is empty", where=f"{key}={path}", fix="write one entry a line")
    return lines


# --------------------------------------------------------------------------- webdataset
# Read with tarfile rather than the webdataset package: we want two controlled passes (the
# captions only, then the image bytes only when the decoded cache misses), messages naming
# the shard and member, and no streaming, shuffling or URL handling, since samples are
# decoded once into the local cache. Sample keys follow webdataset's rule: the member path
# up to the first dot of its file name.


@dataclass(frozen=True)
class _TarSample:
    shard: str
    key: str
    image_member: str
    offset: int  # of the image member's header: tells apart members of the same name
    caption: str


def read_webdataset(
    pattern_or_paths: PathLike | Sequence[PathLike],
    image_size: int,
    cache_dir: PathLike,
    on_corrupt: str = "error",
    progress: bool = True,
) -> ImageTextSet:
    """webdataset shards written by img2dataset as an ImageTextSet (names: sample keys).

    A sample is KEY.jpg|jpeg|png|webp with its caption in KEY.txt (or "caption" in KEY.json).
    A sample without an image or caption is corrupt: on_corrupt="error" raises, "skip" drops
    it and lists it in `skipped` as "shard:key".
    """
    shards = expand_shards(pattern_or_paths)
    samples, incomplete = [], []
    for shard in shards:
        complete, broken = _scan_shard(shard)
        samples += complete
        incomplete += broken
    if incomplete:
        _report_incomplete(incomplete, len(samples), on_corrupt)
    if not samples:
        raise InputError("the shards hold no complete samples", where=shards[0],
                         fix="check that the shards were written by img2dataset")
    decoded = decode_images(_TarImages(samples), image_size, cache_dir, on_corrupt, progress,
                            fingerprint=_shards_fingerprint(shards))
    return _kept_set(decoded, [[s.caption] for s in samples], [s.key for s in samples],
                     skipped_before=[name for name, _ in incomplete])


def expand_shards(pattern_or_paths: PathLike | Sequence[PathLike]) -> list[str]:
    """Shard paths from .tar paths, brace patterns ({00000..00009}), globs or folders."""
    specs = [pattern_or_paths] if isinstance(pattern_or_paths, (str, os.PathLike)) else (
        list(pattern_or_paths))
    shards = []
    for spec in specs:
        for expanded in braceexpand(os.fspath(spec)):
            shards += _match_shards(expanded, os.fspath(spec))
    shards = list(dict.fromkeys(shards))  # a shard named twice is read once
    missing = [shard for shard in shards if not os.path.isfile(shard)]
    if missing:
        raise InputError(
            f"shard not found ({len(missing)} of {len(shards)} shards missing)", where=missing[0],
            fix="check the shard pattern, e.g. shards/{00000..00009}.tar",
        )
    return shards


def _match_shards(expanded: str, spec: str) -> list[str]:
    if os.path.isdir(expanded):
        matched = sorted(glob.glob(os.path.join(glob.escape(expanded), "*.tar")))
    elif any(char in expanded for char in "*?["):
        matched = sorted(glob.glob(expanded))
    else:
        return [expanded]
    if not matched:
        raise InputError("no .tar shards match", where=spec,
                         fix="check the pattern or folder, e.g. shards/{00000..00009}.tar")
    return matched


def _is_shard_spec(path: PathLike | Sequence[PathLike]) -> bool:
    if not isinstance(path, (str, os.PathLike)):
        return True  # a list of shards or patterns
    text = os.fspath(path)
    return (text.lower().endswith(".tar") or "{" in text or any(c in text for c in "*?[")
            or os.path.isdir(text))


def _scan_shard(shard: str) -> tuple[list[_TarSample], list[tuple[str, str]]]:
    """The complete samples of one shard, in image-member order, and (name, why) of the rest.

    Reads only the small text members: on an uncompressed tar, tarfile seeks past the image
    bytes instead of reading them.
    """
    members: dict[str, dict[str, Any]] = {}
    with _open_tar(shard) as tar:
        for info in tar:
            key, ext = _split_key(info.name) if info.isfile() else (None, None)
            if key is None:
                continue
            parts = members.setdefault(key, {})
            if ext in ("txt", "json"):
                parts[ext] = _read_member(tar, info, shard)
            elif ext in WEBDATASET_IMAGE_EXTENSIONS:
                parts[ext] = info
    complete, incomplete = [], []
    for key, parts in members.items():
        sample, why = _tar_sample(shard, key, parts)
        if sample is None:
            incomplete.append((f"{shard}:{key}", why))
        else:
            complete.append(sample)
    complete.sort(key=lambda sample: sample.offset)  # the order pass 2 streams images in
    return complete, incomplete


def _split_key(member: str) -> tuple[str | None, str | None]:
    folder, _, name = member.rpartition("/")
    stem, dot, ext = name.partition(".")
    if not stem or not dot:
        return None, None  # no extension, or a hidden file such as macOS's "._KEY.jpg"
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _tar_sample(shard: str, key: str, parts: dict) -> tuple[_TarSample | None, str]:
    ext = next((e for e in WEBDATASET_IMAGE_EXTENSIONS if e in parts), None)
    if ext is None:
        return None, f"no image ({', '.join('.' + e for e in WEBDATASET_IMAGE_EXTENSIONS)})"
    caption = _sample_caption(parts)
    if not caption:
        return None, "no caption (.txt, or 'caption' in .json)"
    return _TarSample(shard, key, parts[ext].name, parts[ext].offset, caption), ""


def _sample_caption(parts: dict) -> str:
    caption = parts.get("txt", "").strip()
    if not caption and "json" in parts:
        try:
            meta = json.loads(parts["json"])
        except json.JSONDecodeError:
            return ""
        caption = meta.get("caption") if isinstance(meta, dict) else None
        caption = caption.strip() if isinstance(caption, str) else ""
    return caption


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo, shard: str) -> str:
    handle = tar.extractfile(info)
    data = handle.read() if handle is not None else b""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("text member is not UTF-8", where=f"{shard}:{info.name}",
                         fix="write captions as UTF-8") from None


def _report_incomplete(incomplete: list[tuple[str, str]], complete: int, on_corrupt: str) -> None:
    name, why = incomplete[0]
    if on_corrupt == "error":
        raise InputError(f"incomplete sample: {why}", where=name, fix=SKIP_FIX)
    warnings.warn(f"skipped {len(incomplete)} of {len(incomplete) + complete} webdataset samples "
                  f"without an image or caption (first: {name}: {why})", stacklevel=4)


class _TarImages:
    """The (shard:member, image bytes) of each sample, streamed shard by shard in order."""

    def __init__(self, samples: list[_TarSample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for shard, samples in itertools.groupby(self.samples, key=lambda s: s.shard):
            yield from _stream_images(shard, list(samples))


def _stream_images(shard: str, samples: list[_TarSample]) -> Iterator[tuple[str, bytes]]:
    """(shard:member, bytes) of `samples` (in member order), reading the shard once."""
    wanted = iter(samples)
    sample = next(wanted, None)
    with _open_tar(shard) as tar:
        for info in tar:
            if sample is None:
                break
            if info.offset == sample.offset:
                handle = tar.extractfile(info)
                yield f"{shard}:{info.name}", handle.read() if handle else b""
                sample = next(wanted, None)
    if sample is not None:
        raise InputError(f"member {sample.image_member} vanished while reading", where=shard,
                         fix="do not modify shards while clipsearch reads them")


def _open_tar(shard: str) -> tarfile.TarFile:
    try:
        return tarfile.open(shard, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"not a readable tar file ({exc})", where=shard,
                         fix="re-create or remove the shard") from None


def _shards_fingerprint(shards: list[str]) -> str:
    # Shards are immutable once written; their path, size and mtime stand for their bytes,
    # so a cache hit reads no image data at all.
    lines = ["webdataset/v1"]
    for shard in shards:
        stat = os.stat(shard)
        lines.append(f"{os.path.abspath(shard)}\0{stat.st_size}\0{stat.st_mtime_ns}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- text and JSON


def _load_json(path: Path) -> Any:
    with _open_text(path) as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError:
            raise _encoding_error(path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            where=str(path),
            fix="fix the JSON; a file of one JSON object per line must be named .jsonl",
        ) from None


def _encoding_error(path: Path) -> InputError:
    # Text is decoded in chunks, so the exception's offset is not the file's: find the first
    # bad byte again to name its line.
    data = path.read_bytes()
    try:
        data.decode("utf-8-sig")
        line, byte = "?", b""
    except UnicodeDecodeError as exc:
        line, byte = data.count(b"\n", 0, exc.start) + 1, data[exc.start:exc.start + 1]
    return InputError(
        f"not UTF-8 text (byte {byte!r} on line {line})", where=str(path),
        fix="save the file as UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8",
    )


def _open_text(path: Path):
    """The file opened as UTF-8 text (a byte-order mark is dropped), or an InputError."""
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise InputError("file not found", where=str(path), fix="check the path") from None
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror})", where=str(path),
                         fix="check the path and its permissions") from None
