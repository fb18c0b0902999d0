"""The image-only task: an image encoder on labelled images (SupCon, SimCLR's NT-Xent, CE).

A loss without a text side (its `LossInfo.task` is "image") trains this task. Its `Setup`: the
model (an `ImageEncoder`: image tower + projection head, or + a linear classifier when the loss
entry says `classifier`), labelled batches (`ShuffledBatches`, or `BalancedBatches` k x n when
the entry's `sampler` is "balanced"), the loss, a per-batch `step` and an evaluator. What a loss
needs of the task (views, sampler, classifier) is data on its registry entry, never a name test.

Evaluators (`image.evaluator`, a registry: `register_evaluator`, each declaring the metrics it
reports): "knn" embeds the training and validation splits with the frozen tower and reports
`knn_acc1`, the kNN accuracy of val against train (the cheap signal ASHA stops pre-training on;
`objective` = knn_acc1), and with a classifier `val_acc1`, its accuracy on val, which is then
its `objective`; "query_gallery" is clipsearch.tasks.query_gallery's. The test split never
reaches an evaluator: `final_scores` alone reads it (the linear probe of the classification
protocol).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from .. import metrics as M
from ..data.batches import to_float_images
from ..data.labelled import LabelledSplits, load_labelled_splits
from ..data.views import BalancedBatches, ShuffledBatches, ViewAugment, check_balanced
from ..errors import InputError
from ..losses import build_loss, loss_info
from ..models import ImageEncoder, build_image_encoder, load_trainable_state
from ..probe import linear_probe
from ..registry import Registry
from .base import Setup, Task

#: image.evaluator name -> factory(splits, cfg, device) -> evaluator(model, autocast) -> metrics
EvaluatorFactory = Callable[[LabelledSplits, object, torch.device], Callable]


@dataclass(frozen=True)
class EvaluatorEntry:
    factory: EvaluatorFactory
    metrics: tuple[str, ...]  # every metric it can report (a search space may maximise any)


EVALUATORS: Registry[EvaluatorEntry] = Registry("evaluator", "image.evaluator")


def register_evaluator(name: str, factory: EvaluatorFactory, metrics: tuple[str, ...]) -> None:
    EVALUATORS.register(name, EvaluatorEntry(factory, tuple(metrics)))


def evaluator_metrics() -> tuple[str, ...]:
    """What the image task's evaluators can report, in registration order, once each."""
    return tuple(dict.fromkeys(m for entry in EVALUATORS for m in entry.metrics))


def list_evaluators() -> list[str]:
    return EVALUATORS.names()


def check_evaluator(name: str) -> None:
    EVALUATORS.get(name)  # InputError naming image.evaluator and the evaluators that exist


def views_of(cfg) -> int:
    return cfg.image.views or loss_info(cfg.loss.name).views


def check(cfg) -> None:
    """What a config alone can get wrong about the image task (the data's checks come later)."""
    check_evaluator(cfg.image.evaluator)
    info = loss_info(cfg.loss.name)
    if views_of(cfg) < info.min_views:
        raise InputError(f"{info.name} contrasts {info.min_views} views of each image; image.views is "
                         f"{cfg.image.views}", where="image.views",
                         fix=f"use image.views={info.min_views} (or 0 for the default)")


# ------------------------------------------------------------------------------ setup

def setup(cfg, device: torch.device) -> Setup:
    check(cfg)
    splits = load_labelled_splits(cfg.data, cfg.image)
    classifier = loss_info(cfg.loss.name).classifier
    model = build_image_encoder(cfg.model, cfg.image.head, splits.num_classes if classifier else None).to(device)
    batches = _batches(cfg, splits, model.image_preprocess)
    loss_fn = build_loss(cfg.loss.name, cfg.loss.params, num_samples=len(splits.train)).to(device)
    evaluator = EVALUATORS.get(cfg.image.evaluator).factory(splits, cfg, device)
    return Setup(model, batches, loss_fn, evaluator, _step(classifier), len(splits.train),
                 len(splits.train.skipped))


def _batches(cfg, splits: LabelledSplits, preprocess):
    """The training batches, their views normalised as the image tower expects (`preprocess`)."""
    augment = ViewAugment(cfg.data.image_size, views_of(cfg), cfg.image.crop_scale, cfg.image.flip,
                          cfg.image.jitter, cfg.image.grayscale, enabled=cfg.data.augment, preprocess=preprocess)
    check_batches(cfg, splits)
    if sampler_of(cfg) == "balanced":
        return BalancedBatches(splits.train, cfg.train.batch_size, cfg.image.images_per_class, augment)
    return ShuffledBatches(splits.train, cfg.train.batch_size, augment)


def sampler_of(cfg) -> str:
    if cfg.image.sampler == "auto":
        return loss_info(cfg.loss.name).sampler
    return cfg.image.sampler


def check_batches(cfg, splits: LabelledSplits) -> None:
    """InputError when the training split cannot give the batches `cfg` asks for."""
    if sampler_of(cfg) == "balanced":
        check_balanced(splits.train, cfg.train.batch_size, cfg.image.images_per_class)
    elif cfg.train.batch_size > len(splits.train):
        raise InputError(f"train.batch_size {cfg.train.batch_size} is larger than the {len(splits.train)} "
                         "training images", where="train.batch_size", fix=f"use <= {len(splits.train)}")


def _step(classifier: bool):
    def step(model, loss_fn, batch, device, autocast) -> dict:
        b, v = batch.images.shape[:2]
        images = batch.images.to(device, non_blocking=True).flatten(0, 1)  # (B V, 3, S, S)
        labels = batch.labels.to(device)
        with autocast:
            out = model(images).float()
        if classifier:  # every view is a sample of its image's class
            return loss_fn(out, labels=labels.repeat_interleave(v))
        return loss_fn(out.view(b, v, -1), labels=labels, index=batch.index.to(device))

    return step


# ------------------------------------------------------------------------------ evaluation

@torch.no_grad()
def embed(model: ImageEncoder, images: np.ndarray, device: torch.device, batch_size: int,
          autocast=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(L2-normalised tower features (N, F), classifier logits (N, C) or None) of uint8 images."""
    model.eval()
    features, logits = [], []
    with autocast or nullcontext():
        for i in range(0, len(images), batch_size):
            x = to_float_images(images[i:i + batch_size], model.image_preprocess).to(device)
            raw = model.image_tower(x)
            features.append(nn.functional.normalize(raw.float(), dim=-1).cpu())
            if model.classifier is not None:
                logits.append(model.classifier(raw).float().cpu())
    return torch.cat(features), (torch.cat(logits) if logits else None)


def knn_evaluator(splits: LabelledSplits, cfg, device: torch.device):
    train_labels, val_labels = torch.from_numpy(splits.train.labels), torch.from_numpy(splits.val.labels)
    k, batch_size = cfg.image.knn_k, cfg.eval.batch_size

    def evaluate(model: ImageEncoder, autocast) -> dict[str, float]:
        train_emb, _ = embed(model, splits.train.images, device, batch_size, autocast)
        val_emb, val_logits = embed(model, splits.val.images, device, batch_size, autocast)
        out = {"knn_acc1": M.knn_accuracy(train_emb, train_labels, val_emb, val_labels, k=k)}
        if val_logits is not None:
            out["val_acc1"] = M.topk_accuracy(val_logits, val_labels, ks=(1,))["acc@1"]
        # a classifier is selected (and its plateau schedule driven) by what it is scored with
        out["objective"] = out.get("val_acc1", out["knn_acc1"])
        return out

    return evaluate


register_evaluator("knn", knn_evaluator, ("objective", "knn_acc1", "val_acc1"))


# ------------------------------------------------------------------------------ final scores

@dataclass
class FinalScores:
    """A trained encoder scored on the held-out test split (see `final_scores`)."""

    probe_acc1: float                 # linear probe on frozen features, % of test images
    head_acc1: float | None           # ce: its own classifier on the test split
    test_predictions: np.ndarray      # (N_test,) the reported predictions (head for ce, else probe)
    test_labels: np.ndarray
    test_embeddings: np.ndarray       # (N_test, F) float32 tower features
    class_names: list[str]

    @property
    def test_acc1(self) -> float:
        return self.head_acc1 if self.head_acc1 is not None else self.probe_acc1

    def confusion(self) -> np.ndarray:
        n = len(self.class_names)
        return M.confusion_matrix(torch.from_numpy(self.test_predictions), torch.from_numpy(self.test_labels), n).numpy()


def final_scores(cfg, state_dict: dict, device: str = "cpu", splits: LabelledSplits | None = None) -> FinalScores:
    """Load the weights into the encoder `cfg` describes; fit the linear probe on the training
    split's embeddings; score it (and, for ce, the trained classifier) on the test split."""
    splits = splits or load_labelled_splits(cfg.data, cfg.image)
    torch.manual_seed(cfg.seed)
    classifier = loss_info(cfg.loss.name).classifier
    model = build_image_encoder(cfg.model, cfg.image.head, splits.num_classes if classifier else None)
    load_trainable_state(model, state_dict)
    dev = torch.device(device)
    model.to(dev)
    train_emb, _ = embed(model, splits.train.images, dev, cfg.eval.batch_size)
    test_emb, test_logits = embed(model, splits.test.images, dev, cfg.eval.batch_size)
    probe = linear_probe(train_emb.numpy(), splits.train.labels, test_emb.numpy(), splits.test.labels, seed=cfg.seed)
    head_acc, predictions = None, probe.predictions
    if test_logits is not None:
        predictions = test_logits.argmax(1).numpy()
        head_acc = float(100.0 * (predictions == splits.test.labels).mean())
    return FinalScores(probe.accuracy, head_acc, predictions, splits.test.labels.copy(), test_emb.numpy(),
                       splits.class_names)


def metrics() -> tuple[str, ...]:
    return evaluator_metrics()


TASK = Task("image", check, setup, metrics)
