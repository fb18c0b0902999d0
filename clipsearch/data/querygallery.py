"""Query and gallery images for cross-domain retrieval (seed 000): rank the gallery for each query.

- embedded: scikit-learn's 1,797 8x8 digits (other writers, another scanner, 8 px) are the
  queries; the fixed 1,000-image MNIST split that the image task holds out as its test split is
  the gallery. Training sees the rest of MNIST only, so no gallery image is trained on.
- folders: `query/` and `gallery/`, each labelled either by class sub-folders
  (`query/<class>/*`) or, when flat (`query/*.jpg`, the competition's layout), by a labels file:
  CSV with columns `file,label`, `file` relative to the folder holding the labels file.

Labels are matched across the two sides by class name, so `query/ada/` and `gallery/ada/` are
the same identity whatever other classes either side holds. A query whose class is absent from
the gallery stays in (it can never hit: that is what its scores say).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .imageset import ImageTextSet
from .readers import IMAGE_EXTENSIONS, _decode_set, read_image_folder


@dataclass
class QueryGallery:
    query: ImageTextSet
    gallery: ImageTextSet

    @property
    def class_names(self) -> list[str]:
        """Every class of either side, sorted: what `labels` indexes."""
        return sorted(set(self.query.class_names) | set(self.gallery.class_names))

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        """Query and gallery labels as ids into `class_names` (classes matched by name)."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return (np.array([index[self.query.class_names[c]] for c in self.query.labels], dtype=np.int64),
                np.array([index[self.gallery.class_names[c]] for c in self.gallery.labels], dtype=np.int64))


def load_query_gallery(query: str, gallery: str, labels_file: str | None, image_size: int,
                       cache_dir: str, on_corrupt: str = "error", progress: bool = False) -> QueryGallery:
    """The two sides `query` and `gallery` name ('embedded' or a folder), decoded at image_size."""
    if (query == "embedded") != (gallery == "embedded"):
        raise InputError("query and gallery must both be 'embedded' or both be folders",
                         where="retrieval.query" if query != "embedded" else "retrieval.gallery",
                         fix="set retrieval.query and retrieval.gallery together")
    if query == "embedded":
        return embedded_query_gallery(image_size)
    labels = read_labels_file(Path(labels_file)) if labels_file else None
    read = dict(image_size=image_size, cache_dir=cache_dir, on_corrupt=on_corrupt, progress=progress)
    return QueryGallery(labelled_folder(Path(query), labels, "retrieval.query", **read),
                        labelled_folder(Path(gallery), labels, "retrieval.gallery", **read))


def embedded_query_gallery(image_size: int) -> QueryGallery:
    from .embedded import mnist_splits, sklearn_digits

    _, held_out = mnist_splits(image_size)
    return QueryGallery(sklearn_digits(image_size), held_out)


def labelled_folder(folder: Path, labels: dict[str, str] | None, key: str, image_size: int,
                    cache_dir: str, on_corrupt: str, progress: bool) -> ImageTextSet:
    """One side: class sub-folders, or flat images named in the labels file."""
    if not folder.is_dir():
        raise InputError("folder not found" if not folder.exists() else "not a folder", where=f"{key}={folder}",
                         fix="pass a folder of images (query/<class>/* or flat with retrieval.labels)")
    images = _flat_images(folder)
    has_classes = any(d.is_dir() and not d.name.startswith(".") for d in folder.iterdir())
    if has_classes:
        paths, ids, class_names = read_image_folder(folder)
    elif not images:
        raise InputError("the folder holds no images", where=f"{key}={folder}",
                         fix=f"add images ({', '.join(IMAGE_EXTENSIONS)}) or point {key} at another folder")
    elif labels is None:
        raise InputError("flat image folder without labels", where=f"{key}={folder}",
                         fix="put the images in <class>/ sub-folders, or pass retrieval.labels=FILE "
                             "(CSV with columns file,label)")
    else:
        paths, ids, class_names = _labelled_by_file(images, labels, key, folder)
    captions = [[class_names[i]] for i in ids]
    return _decode_set(paths, captions, folder, image_size, cache_dir, on_corrupt, progress,
                       labels=ids, class_names=class_names)


def _flat_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_EXTENSIONS))


def _labelled_by_file(images: list[Path], labels: dict[str, str], key: str, folder: Path):
    resolved = {str(Path(path).resolve()): label for path, label in labels.items()}
    missing = [p.name for p in images if str(p.resolve()) not in resolved]
    if missing:
        raise InputError(f"{len(missing)} image(s) have no row in the labels file, e.g. {missing[0]!r}",
                         where=f"{key}={folder}", fix="add a file,label row for every query and gallery image")
    class_names = sorted({resolved[str(p.resolve())] for p in images})
    index = {name: i for i, name in enumerate(class_names)}
    ids = np.array([index[resolved[str(p.resolve())]] for p in images], dtype=np.int64)
    return [str(p) for p in images], ids, class_names


def read_labels_file(path: Path) -> dict[str, str]:
    """{absolute image path: label} from a CSV with columns file,label (paths relative to its folder)."""
    if not path.is_file():
        raise InputError("labels file not found", where=f"retrieval.labels={path}",
                         fix="pass a CSV with columns file,label")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
            raise InputError(f"columns are {reader.fieldnames}, need file and label", where=str(path),
                             fix="write a header row: file,label")
        rows = list(reader)
    labels = {}
    for line, row in enumerate(rows, start=2):
        if not (row["file"] or "").strip() or not (row["label"] or "").strip():
            raise InputError("empty file or label", where=f"{path}:{line}", fix="give both columns a value")
        labels[str((path.parent / row["file"].strip()).resolve())] = row["label"].strip()
    return labels
