"""The image-text task (CLIP-style): a dual encoder on image-caption pairs, evaluated by TR@k /
IR@k on the retrieval set and zero-shot ACC@k on the classification set, the text tower's
output cached on disk when the tower is frozen.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Callable

import numpy as np
import torch

from .. import metrics as M
from ..data import EvalSets, check_sources, load_eval_sets, load_training_set
from ..data.batches import PairBatches, TextBank, to_float_images, trim_padding
from ..data.cache import cached_arrays
from ..losses import build_loss
from ..machine_cache import machine_cache_dir
from ..models import DualEncoder, build_dual_encoder
from .base import Setup, Task

#: what Evaluator reports after every evaluation (any of them can be a search's metric)
METRICS = ("objective", "tr1", "tr5", "tr10", "ir1", "ir5", "ir10", "r_mean", "acc1", "acc5")


def check(cfg) -> None:
    """Nothing a config alone can get wrong here: the data's checks come with the data."""


def setup(cfg, device: torch.device) -> Setup:
    """CLIP-style training: a dual encoder on image-caption pairs, retrieval + zero-shot evaluation."""
    check_sources(cfg.data, image_text=True)
    train_set = load_training_set(cfg.data)
    eval_sets = load_eval_sets(cfg.data)
    model, tokenize = build_dual_encoder(cfg.model, cfg.data.max_text_length)
    model.to(device)
    text_bank = TextBank.build(train_set.captions, tokenize)
    if model.text_tower_frozen:
        text_bank.features = frozen_text_features(model, text_bank.tokens, cfg.data.cache_dir,
                                                  cfg.eval.batch_size, device)
    batches = PairBatches(train_set, text_bank, cfg.train.batch_size, cfg.data.augment, model.image_preprocess)
    loss_fn = build_loss(cfg.loss.name, cfg.loss.params, num_samples=len(train_set)).to(device)
    evaluator = Evaluator(eval_sets, tokenize, device, cfg.eval.batch_size, cfg.data.cache_dir)
    return Setup(model, batches, loss_fn, evaluator, pair_step, len(train_set), len(train_set.skipped))


def pair_step(model, loss_fn, batch, device, autocast) -> dict:
    images = batch.images.to(device, non_blocking=True)
    with autocast:
        image_emb = model.encode_image(images)
        if batch.text_features is not None:  # a frozen tower's cached output
            text_emb = model.encode_text_features(batch.text_features.to(device, non_blocking=True))
        else:
            text_emb = model.encode_text({k: v.to(device, non_blocking=True) for k, v in batch.tokens.items()})
    return loss_fn(image_emb.float(), text_emb.float(), index=batch.index.to(device),
                   labels=None if batch.labels is None else batch.labels.to(device))


def encode_texts(encode: Callable[[dict], torch.Tensor], tokens: dict[str, torch.Tensor], batch_size: int,
                 device: torch.device) -> torch.Tensor:
    """encode(chunk) for every row of `tokens`, on the CPU in the rows' order. Rows go shortest
    first, so that each chunk is trimmed to its own longest (the embedded captions average 16
    of their 24 tokens: a third less text encoding)."""
    mask = tokens.get("attention_mask")
    n = len(next(iter(tokens.values())))
    order = torch.argsort(mask.sum(1), stable=True) if mask is not None else torch.arange(n)
    out = None
    for i in range(0, n, batch_size):
        rows = order[i:i + batch_size]
        chunk = trim_padding({k: v[rows] for k, v in tokens.items()})
        encoded = encode({k: v.to(device) for k, v in chunk.items()}).float().cpu()
        if out is None:
            out = torch.empty(n, encoded.shape[1])
        out[rows] = encoded
    return out


@torch.no_grad()
def frozen_text_features(model: DualEncoder, tokens: dict[str, torch.Tensor], cache_dir: str, batch_size: int,
                         device: torch.device) -> torch.Tensor:
    """A frozen text tower's output for every row of `tokens`: computed once, then kept in
    `cache_dir` for every later run and trial (the key hashes the tower's weights and the
    tokens, so another tower, layer count or caption set is another entry). The key also holds
    the chunk size and torch's thread count: both change the features' float rounding (each
    chunk is trimmed to its longest caption), and a run must read exactly the features it would
    compute itself, whichever run of the machine filled the cache (seen: train --quick ended
    at 36.11 instead of its 35.21 on the features the test suite had cached)."""
    digest = hashlib.sha256(_tower_digest(model.text_tower).encode())
    digest.update(f"chunk={batch_size};threads={torch.get_num_threads()}".encode())
    for name, tensor in sorted(tokens.items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())

    def encode() -> dict[str, np.ndarray]:
        was_training = model.text_tower.training
        model.text_tower.eval()
        try:
            features = encode_texts(lambda chunk: model.text_tower(**chunk), tokens, batch_size, device)
        finally:
            model.text_tower.train(was_training)
        return {"features": features.numpy()}

    return torch.from_numpy(cached_arrays(cache_dir, f"text-features-{digest.hexdigest()[:24]}", encode)["features"])


#: a frozen tower's weights hashed once per tower (a run asks for its training captions, its
#: validation captions and its prompts)
_TOWER_DIGESTS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def _tower_digest(tower: torch.nn.Module) -> str:
    if tower not in _TOWER_DIGESTS:
        digest = hashlib.sha256()
        for name, tensor in sorted(tower.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        _TOWER_DIGESTS[tower] = digest.hexdigest()
    return _TOWER_DIGESTS[tower]


class Evaluator:
    """TR@k / IR@k on the retrieval set, zero-shot ACC@k on the classification set, objective."""

    def __init__(self, sets: EvalSets, tokenize, device: torch.device, batch_size: int,
                 cache_dir: str | None = None):
        self.sets, self.device, self.batch_size = sets, device, batch_size
        self.cache_dir = cache_dir or machine_cache_dir()
        # Encode each distinct caption once, then give every (image, caption) pair its own row:
        # a text shared by two images is two rows with equal embeddings, a tie that counts
        # against the query (see metrics.retrieval_metrics).
        self.text = TextBank.build(sets.retrieval.captions, tokenize)
        self.pair_rows = torch.from_numpy(np.concatenate(self.text.caption_rows))
        self.text_to_image = torch.from_numpy(np.repeat(np.arange(len(sets.retrieval)),
                                                        [len(r) for r in self.text.caption_rows]))
        names = sets.zeroshot.class_names
        self.prompts = tokenize([p.format(c) for c in names for p in sets.prompts])
        self.n_classes, self.n_prompts = len(names), len(sets.prompts)
        self._frozen: dict[str, torch.Tensor] = {}  # a frozen text tower's output, per text set
        #: a random ranking's objective on these sets: printed beside every objective
        self.chance_objective = M.chance_levels([len(r) for r in self.text.caption_rows], self.n_classes)["objective"]

    @torch.no_grad()
    def __call__(self, model: DualEncoder, autocast) -> dict[str, float]:
        model.eval()
        with autocast:
            images = self._images(model, self.sets.retrieval.images)
            texts = self.text_embeddings(model, self.text.tokens, "captions")[self.pair_rows]
            zs_images = self._images(model, self.sets.zeroshot.images)
            prompts = self.text_embeddings(model, self.prompts, "prompts").view(self.n_classes, self.n_prompts, -1)
        out = M.retrieval_metrics(images, texts, self.text_to_image)
        classifier = M.zeroshot_classifier(prompts)
        out.update(M.topk_accuracy(zs_images @ classifier.T, torch.from_numpy(self.sets.zeroshot.labels)))
        out["objective"] = M.objective(out)
        out["chance_objective"] = self.chance_objective
        return {k.replace("@", ""): float(v) for k, v in out.items()}

    def _images(self, model, images) -> torch.Tensor:
        chunks = []
        for i in range(0, len(images), self.batch_size):
            x = to_float_images(images[i:i + self.batch_size], model.image_preprocess).to(self.device)
            chunks.append(model.encode_image(x).float().cpu())
        return torch.cat(chunks)

    def text_embeddings(self, model: DualEncoder, tokens: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """The model's embedding of every row of `tokens`; a frozen tower runs once per text set."""
        if not model.text_tower_frozen:
            return encode_texts(model.encode_text, tokens, self.batch_size, self.device)
        if name not in self._frozen:
            self._frozen[name] = frozen_text_features(model, tokens, self.cache_dir, self.batch_size, self.device)
        return model.encode_text_features(self._frozen[name].to(self.device)).cpu()


TASK = Task("image_text", check, setup, lambda: METRICS)
