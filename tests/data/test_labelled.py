"""Labelled ImageFolder splits for the image task: layouts, mixed images, bad trees."""

import numpy as np
import pytest
from PIL import Image

from clipsearch.config import load_config
from clipsearch.data.labelled import load_labelled_splits
from clipsearch.errors import InputError
from clipsearch.train import train

MODES = [("L", (20, 31)), ("RGBA", (40, 40)), ("RGB", (64, 17)), ("P", (28, 28)), ("I;16", (33, 29))]


def write_tree(root, classes, per_class=6, split="train"):
    rng = np.random.default_rng(0)
    for c in classes:
        folder = root / split / c
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode, size = MODES[i % len(MODES)]
            pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            image = Image.fromarray(pixels).convert(mode if mode != "I;16" else "L")
            image.save(folder / f"{i}.png")
    return root


def cfg_for(root, tmp_path, *more):
    return load_config(quick=True, overrides=[f"data.source={root}", f"data.cache_dir={tmp_path / 'cache'}",
                                              "loss.name=supcon", "train.batch_size=4", "train.epochs=1",
                                              "image.knn_k=3", "train.threads=1", *more])


def test_mixed_sizes_and_modes_train_end_to_end(tmp_path):
    """Grayscale, RGBA, palette and odd-sized images become the model's 3 x S x S input."""
    root = write_tree(tmp_path / "data", ["cat", "dog", "owl"], per_class=10)
    cfg = cfg_for(root, tmp_path)
    splits = load_labelled_splits(cfg.data, cfg.image)
    assert splits.train.images.shape[1:] == (28, 28, 3) and splits.class_names == ["cat", "dog", "owl"]
    result = train(cfg)
    assert result["train_images"] == len(splits.train) and result["skipped_images"] == 0
    assert np.isfinite(result["train_loss"])
    hits = result["knn_acc1"] * len(splits.val) / 100  # kNN of val against train: a share of val's images
    assert hits == pytest.approx(round(hits))


def test_test_folder_is_the_test_split_and_train_gives_val(tmp_path):
    root = write_tree(tmp_path / "data", ["a", "b"], per_class=10)
    write_tree(root, ["a", "b"], per_class=3, split="test")
    splits = load_labelled_splits(*_sections(cfg_for(root, tmp_path)))
    assert len(splits.test) == 6 and len(splits.train) + len(splits.val) == 20
    assert all(name.startswith("a/") or name.startswith("b/") for name in splits.test.names)
    assert not set(splits.train.names) & set(splits.val.names)


def test_without_test_folder_a_stratified_share_is_held_out(tmp_path):
    root = write_tree(tmp_path / "data", ["a", "b"], per_class=10)
    splits = load_labelled_splits(*_sections(cfg_for(root, tmp_path, "image.test_fraction=0.3")))
    assert np.bincount(splits.test.labels).tolist() == [3, 3]
    names = [set(s.names) for s in (splits.train, splits.val, splits.test)]
    assert not (names[0] & names[2]) and not (names[1] & names[2])


def _sections(cfg):
    return cfg.data, cfg.image


@pytest.mark.parametrize("layout, named", [(["only"], "need at least 2"), (["a", "empty"], "empty")])
def test_single_class_and_empty_class_folder_are_bad_input(tmp_path, layout, named):
    root = write_tree(tmp_path / "data", [c for c in layout if c != "empty"])
    if "empty" in layout:
        (root / "train" / "empty").mkdir()
    with pytest.raises(InputError, match=named if named != "empty" else "holds no images"):
        load_labelled_splits(*_sections(cfg_for(root, tmp_path)))
