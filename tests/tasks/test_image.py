"""The image-only task through the one train(): ce, ntxent, supcon on labelled images.

Tiny runs on the embedded MNIST (a tenth of the training split, a few steps per epoch).
"""

import math

import numpy as np
import pytest
import torch

from clipsearch.config import load_config
from clipsearch.data import labelled
from clipsearch.data.imageset import ImageTextSet
from clipsearch.data.views import BalancedBatches, ViewAugment
from clipsearch.errors import InputError
from clipsearch.tasks.image import final_scores
from clipsearch.train import TIMING_KEYS, train

TINY = ["data.fraction=0.1", "train.batch_size=32", "train.epochs=2", "train.threads=1", "eval.batch_size=512",
        "image.flip=0", "train.max_steps_per_epoch=3", "image.images_per_class=4"]


def tiny(loss, *more):
    return load_config(quick=True, overrides=[f"loss.name={loss}", *TINY, *more])


class Crash(Exception):
    pass


@pytest.mark.parametrize("loss", ["ce", "ntxent", "supcon"])
def test_each_method_trains_reports_knn_accuracy_and_keeps_its_best_epoch(tmp_path, loss):
    seen = []
    result = train(tiny(loss), report=lambda m, c: seen.append(m), run_dir=tmp_path)
    assert [m["epoch"] for m in seen] == [1, 2]
    last = seen[-1]
    assert 0 <= last["knn_acc1"] <= 100
    assert last["objective"] == (last["val_acc1"] if loss == "ce" else last["knn_acc1"])
    assert math.isfinite(last["train_loss"]) and last["train_images"] == 350
    assert ("val_acc1" in last) == (loss == "ce")
    assert (tmp_path / "best" / "model.pt").is_file() and (tmp_path / "checkpoint" / "state.pt").is_file()
    assert result["best_objective"] == max(m["objective"] for m in seen)


def test_supcon_resumed_after_epoch_one_ends_like_an_unbroken_run(tmp_path):
    """The balanced sampler and the augmentations draw from the checkpointed generator."""
    unbroken = train(tiny("supcon"), run_dir=tmp_path / "unbroken")

    def crash(metrics, _):
        if metrics["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        train(tiny("supcon"), report=crash, run_dir=tmp_path / "broken")
    resumed = train(tiny("supcon"), run_dir=tmp_path / "broken", resume_from=tmp_path / "broken" / "checkpoint")
    for key in TIMING_KEYS:  # wall times: the only keys that may differ
        unbroken.pop(key), resumed.pop(key)
    assert resumed == unbroken


@pytest.mark.parametrize("setting", ["image.crop_scale=0.9", "image.jitter=0.0", "image.grayscale=0.9",
                                     "image.flip=0.5", "image.head=mlp", "image.images_per_class=8",
                                     "loss.temperature=0.3", "optimizer.lr=0.01", "model.embed_dim=16",
                                     "train.batch_size=40", "data.image_size=24", "image.views=3"])
def test_every_searched_image_hyperparameter_changes_training(setting):
    one_epoch = ["train.epochs=1", "train.max_steps_per_epoch=2", "scheduler.warmup_epochs=0"]
    base = train(tiny("supcon", *one_epoch))
    changed = train(tiny("supcon", *one_epoch, setting))
    assert changed["train_loss"] != base["train_loss"]


def test_the_test_split_never_reaches_training_or_model_selection(monkeypatch):
    """Poisoned test images (noise) and labels (shuffled) leave every training metric as it was."""
    clean = train(tiny("ce"))
    original = labelled.mnist_labelled_splits

    def poisoned(size):
        splits = original(size)
        rng = np.random.default_rng(0)
        test = ImageTextSet(rng.integers(0, 256, splits.test.images.shape, dtype=np.uint8), splits.test.captions,
                            splits.test.names, rng.permutation(splits.test.labels), splits.test.class_names)
        return labelled.LabelledSplits(splits.train, splits.val, test)

    monkeypatch.setattr(labelled, "mnist_labelled_splits", poisoned)
    dirty = train(tiny("ce"))
    for key in TIMING_KEYS:
        clean.pop(key), dirty.pop(key)
    assert dirty == clean


def test_embedded_splits_are_disjoint_and_test_is_the_fixed_held_out_split():
    splits = labelled.mnist_labelled_splits(28)
    names = [set(s.names) for s in (splits.train, splits.val, splits.test)]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3500, 500, 1000)


def test_probe_is_fitted_on_training_embeddings_only(tmp_path):
    """Shuffling the test labels changes the probe's score, never its predictions."""
    cfg = tiny("ntxent", "train.epochs=1")
    train(cfg, run_dir=tmp_path)
    weights = torch.load(tmp_path / "best" / "model.pt", weights_only=True)["model"]
    splits = labelled.load_labelled_splits(cfg.data, cfg.image)
    scores = final_scores(cfg, weights, splits=splits)
    shuffled = labelled.LabelledSplits(splits.train, splits.val, splits.test.subset(np.arange(len(splits.test))))
    shuffled.test.labels[:] = np.random.default_rng(1).permutation(shuffled.test.labels)
    again = final_scores(cfg, weights, splits=shuffled)
    assert np.array_equal(again.test_predictions, scores.test_predictions)
    assert again.probe_acc1 != scores.probe_acc1 and scores.probe_acc1 > 20  # well above chance (10%)
    assert scores.confusion().sum() == len(splits.test) and scores.head_acc1 is None


def test_ce_reports_its_own_classifier_on_the_test_split(tmp_path):
    cfg = tiny("ce", "train.epochs=1")
    train(cfg, run_dir=tmp_path)
    scores = final_scores(cfg, torch.load(tmp_path / "best" / "model.pt", weights_only=True)["model"])
    assert scores.head_acc1 is not None and scores.test_acc1 == scores.head_acc1
    assert np.trace(scores.confusion()) == round(scores.head_acc1 * len(scores.test_labels) / 100)


# ------------------------------------------------------------------------------ the balanced sampler

def labelled_set(counts):
    labels = np.concatenate([[c] * n for c, n in enumerate(counts)]).astype(np.int64)
    images = np.zeros((len(labels), 8, 8, 3), dtype=np.uint8)
    images[..., 0] = np.arange(len(labels))[:, None, None]  # image i holds the value i
    return ImageTextSet(images, [["x"]] * len(labels), [str(i) for i in range(len(labels))], labels,
                        [str(c) for c in range(len(counts))])


def no_augment(views=1):
    return ViewAugment(8, views, 1.0, 0.0, 0.0, 0.0, enabled=False)


def test_balanced_batches_hold_k_classes_of_n_and_keep_a_one_image_class(capsys):
    data = labelled_set([5, 5, 1, 6])
    batches = BalancedBatches(data, batch_size=6, images_per_class=2, augment=no_augment())
    assert "fewer than n = 2" in capsys.readouterr().err
    seen_small = False
    for batch in batches.epoch(torch.Generator().manual_seed(0)):
        labels = batch.labels.numpy()
        classes, counts = np.unique(labels, return_counts=True)
        assert len(classes) == 3 and (counts == 2).all()
        if 2 in classes:  # the one-image class: its image twice
            seen_small = True
            assert (batch.index[labels == 2] == 10).all()
    assert len(batches) == len(data) // 6
    assert seen_small or len(batches) < 4


@pytest.mark.parametrize("batch_size, n, key", [(40, 2, "train.batch_size"), (10, 2, "image.images_per_class"),
                                                (7, 2, "train.batch_size")])
def test_balanced_batches_that_cannot_be_drawn_are_bad_input(batch_size, n, key):
    with pytest.raises(InputError, match=key):
        BalancedBatches(labelled_set([5, 5, 5, 5]), batch_size, n, no_augment())


def test_views_differ_and_are_seeded():
    data = labelled.mnist_labelled_splits(28).train
    augment = ViewAugment(28, 2, 0.5, 0.5, 0.4, 0.2)
    a = augment(data.images[:4], torch.Generator().manual_seed(3))
    b = augment(data.images[:4], torch.Generator().manual_seed(3))
    assert a.shape == (4, 2, 3, 28, 28) and torch.equal(a, b)
    assert not torch.equal(a[:, 0], a[:, 1])


def test_ntxent_with_one_view_is_bad_input():
    with pytest.raises(InputError, match="image.views"):
        tiny("ntxent", "image.views=1")
