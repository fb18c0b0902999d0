"""`train(cfg, report=...)`: one training run (image-text or image-only), read top to bottom.

The loop knows nothing of Ray or MLflow: after every epoch it writes a checkpoint and calls
`report(metrics, checkpoint_dir)`; the Ray trainable forwards that to `tune.report`, the CLI
prints it. A run given `resume_from` (a checkpoint directory) continues exactly where that
checkpoint left off: model, optimizer, scheduler, the loss's per-sample state, the data RNG and
the epoch, so its metrics equal those of an unbroken run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import pickle
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics as M
from .config import Config, save_config
from .data import EvalSets, check_sources, load_eval_sets, load_training_set
from .data.cache import cached_arrays
from .data.batches import PairBatches, TextBank, to_float_images, trim_padding
from .errors import InputError
from .losses import build_loss
from .models import DualEncoder, build_dual_encoder, load_trainable_state, resolve_device, trainable_state
from .optim import build_optimizer, build_scheduler

Report = Callable[[dict, Path | None], None]
CHECKPOINT_FILE = "state.pt"
#: the checkpoint before the latest: what a run resumes from when state.pt is truncated or lost
PREVIOUS_CHECKPOINT_FILE = "state.prev.pt"
#: what train() reports of its own wall time each epoch: the only keys two equal runs differ in
TIMING_KEYS = ("epoch_seconds", "train_seconds", "eval_seconds")
log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf: training stops at once instead of training on garbage."""


@dataclass
class RunState:
    """What a checkpoint carries besides the modules: where the run is and how it has done."""

    epoch: int = 0                       # epochs completed
    step: int = 0                        # optimizer updates done
    best_objective: float = -math.inf
    best_epoch: int = 0
    best_metrics: dict = field(default_factory=dict)


def train(cfg: Config, report: Report | None = None, run_dir: str | Path | None = None,
          resume_from: str | Path | None = None, progress: bool = False) -> dict:
    """Train as `cfg` says; returns the last epoch's metrics plus best_*.

    The loss decides what is trained: a dual encoder on image-caption pairs (clip, sogclr, ...)
    or, for a loss without a text side (supcon, ntxent, ce), an image encoder on labelled
    images (clipsearch.imagetask). Each task is a `Setup`; the loop below serves both.

    run_dir: where checkpoints go (`checkpoint/state.pt` each epoch, `best/model.pt` at the best
    epoch); None keeps nothing on disk. resume_from: a checkpoint directory to continue from.
    """
    torch.manual_seed(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)

    setup = _setup_for(cfg)(cfg, device)
    model, loss_fn, batches = setup.model, setup.loss_fn, setup.batches
    optimizer = build_optimizer([model, loss_fn], cfg.optimizer.name, cfg.optimizer.lr,
                                cfg.optimizer.weight_decay, cfg.optimizer.params)
    steps_per_epoch = min(len(batches), cfg.train.max_steps_per_epoch or len(batches))
    schedule = build_scheduler(optimizer, cfg.scheduler.name, cfg.scheduler.params, cfg.train.epochs, steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed)
    evaluator = setup.evaluator
    # fp16's smallest normal is 6e-5: unscaled, small gradients underflow to zero in backward
    scaler = torch.amp.GradScaler(device.type, enabled=_precision(cfg.train.precision, device) == "fp16")

    state = RunState()
    if resume_from is not None:
        state = load_checkpoint(Path(resume_from), model, loss_fn, optimizer, schedule, generator, scaler)
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")

    autocast = _autocast(cfg.train.precision, device)
    last: dict = {}
    for epoch in range(state.epoch + 1, cfg.train.epochs + 1):
        started = time.perf_counter()
        model.train()
        train_metrics = train_one_epoch(setup, optimizer, schedule, generator, device, autocast, scaler,
                                        cfg.train.grad_clip, steps_per_epoch, state, progress, epoch)
        state.epoch = epoch
        trained = time.perf_counter()
        # train_seconds / eval_seconds: the epoch's productive time; the rest of a trial's wall
        # time (set-up, checkpoints, reporting) is overhead (`clipsearch bench tune`'s goodput)
        last = {"epoch": epoch, **train_metrics, **{f"loss_{k}": v for k, v in loss_fn.epoch_diagnostics().items()},
                "train_seconds": trained - started, "eval_seconds": 0.0}
        if epoch % cfg.eval.every == 0 or epoch == cfg.train.epochs:
            evaluation = evaluator(model, autocast)
            last.update(evaluation, eval_seconds=time.perf_counter() - trained)
            schedule.after_epoch(epoch, evaluation["objective"])
            if evaluation["objective"] > state.best_objective:
                state.best_objective, state.best_epoch = evaluation["objective"], epoch
                state.best_metrics = evaluation
                if run_dir is not None:
                    _atomic_save({"model": trainable_state(model)}, run_dir / "best" / "model.pt")
        last.update(best_objective=state.best_objective, best_epoch=state.best_epoch,
                    epoch_seconds=time.perf_counter() - started, train_images=setup.train_images,
                    skipped_images=setup.skipped_images)
        checkpoint = None
        if run_dir is not None:
            checkpoint = run_dir / "checkpoint"
            save_checkpoint(checkpoint, model, loss_fn, optimizer, schedule, generator, state, scaler)
        if report is not None:
            report(dict(last), checkpoint)
    return {**last, **{f"best_{k}": v for k, v in state.best_metrics.items()}}


def train_one_epoch(setup: Setup, optimizer, schedule, generator, device, autocast, scaler, grad_clip, steps,
                    state, progress, epoch) -> dict:
    model, loss_fn, batches = setup.model, setup.loss_fn, setup.batches
    totals: dict[str, float] = {}
    # disable=None: no bar when stderr is not a terminal (logs, CI, Ray workers)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", disable=None if progress else True, leave=False, dynamic_ncols=True)
    for i, batch in enumerate(batches.epoch(generator)):
        if i >= steps:
            break  # max_steps_per_epoch; the generator has drawn this epoch's order either way
        out = setup.step(model, loss_fn, batch, device, autocast)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"loss is {loss.item()} at epoch {epoch}, step {i + 1}")
        backward_and_step(loss, optimizer, scaler, grad_clip)
        state.step += 1
        schedule.after_step(state.step)
        for key, value in out.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach())  # one sync per key: fine at this scale
        bar.update(1)
        bar.set_postfix(loss=f"{totals['loss'] / (i + 1):.4f}")
    bar.close()
    n = max(min(steps, len(batches)), 1)
    return {("train_loss" if k == "loss" else f"train_{k}"): v / n for k, v in totals.items()} | {"lr": schedule.lr()}


def backward_and_step(loss: torch.Tensor, optimizer, scaler: torch.amp.GradScaler, grad_clip: float) -> None:
    """One update from `loss`: backward scaled by `scaler` (fp16; a no-op when disabled),
    gradients unscaled before clipping, the step skipped when they overflowed."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()


@dataclass
class Setup:
    """What differs between the tasks train() runs; everything else in the loop is shared.

    step(model, loss_fn, batch, device, autocast) -> the loss's dict for one batch;
    evaluator(model, autocast) -> metrics with "objective" (higher is better).
    """

    model: torch.nn.Module
    batches: object                  # len() and epoch(generator) -> batches
    loss_fn: torch.nn.Module
    evaluator: Callable
    step: Callable
    train_images: int
    skipped_images: int


def _setup_for(cfg: Config) -> Callable[[Config, torch.device], Setup]:
    from .imagetask import image_setup, is_image_task

    return image_setup if is_image_task(cfg) else image_text_setup


def image_text_setup(cfg: Config, device: torch.device) -> Setup:
    """CLIP-style training: a dual encoder on image-caption pairs, retrieval + zero-shot evaluation."""
    check_sources(cfg.data, image_text=True)
    train_set = load_training_set(cfg.data)
    eval_sets = load_eval_sets(cfg.data)
    model, tokenize = build_dual_encoder(cfg.model, cfg.data.max_text_length)
    model.to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
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
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
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
    tokens, so another tower, layer count or caption set is another entry)."""
    digest = hashlib.sha256(_tower_digest(model.text_tower).encode())
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
                 cache_dir: str = ".cache/clipsearch"):
        self.sets, self.device, self.batch_size, self.cache_dir = sets, device, batch_size, cache_dir
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


def _precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _autocast(precision: str, device: torch.device):
    precision = _precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------ checkpoints

def _atomic_save(obj, path: Path) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves half a file,
    and a failed write (a full disk) leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:  # a file object: torch then keeps the OSError of a failed write
            torch.save(obj, file)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, RuntimeError) and isinstance(exc.__context__, OSError):
            # torch reports a full disk as an internal "unexpected pos"; say what happened, and where
            raise OSError(exc.__context__.errno, exc.__context__.strerror, str(path)) from exc
        raise
    os.replace(tmp, path)


def save_checkpoint(directory: Path, model, loss_fn, optimizer, schedule, generator, state: RunState,
                    scaler: torch.amp.GradScaler | None = None) -> None:
    """state.pt, with the one it replaces kept as state.prev.pt (see load_checkpoint)."""
    current = directory / CHECKPOINT_FILE
    _atomic_save({
        "model": trainable_state(model), "loss": loss_fn.state_dict(), "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(), "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(), "state": vars(state).copy(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
    }, directory / ".state.next.pt")
    if current.is_file():
        os.replace(current, directory / PREVIOUS_CHECKPOINT_FILE)
    os.replace(directory / ".state.next.pt", current)


def load_checkpoint(directory: Path, model, loss_fn, optimizer, schedule, generator,
                    scaler: torch.amp.GradScaler | None = None) -> RunState:
    saved = read_checkpoint(directory)
    if scaler is not None and scaler.is_enabled() and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])  # fp16's loss scale goes on where it was
    load_trainable_state(model, saved["model"])
    loss_fn.load_state_dict(saved["loss"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    return RunState(**saved["state"])


def read_checkpoint(directory: Path) -> dict:
    """The latest readable checkpoint in `directory`: state.pt, or state.prev.pt (one epoch
    earlier) when state.pt is truncated, empty or missing (a disk that filled, a copy cut short).

    A checkpoint is data: loading one never runs code (weights_only). One that holds pickled
    objects is refused outright, not skipped: someone put it there.
    """
    problems = []
    for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} missing")
            continue
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise InputError(f"checkpoint refused: it holds pickled objects, not only tensors ({exc.__class__.__name__})",
                             where=str(path), fix="resume only from checkpoints clipsearch wrote") from None
        except (RuntimeError, EOFError, OSError) as exc:  # torch's zip reader on a cut file, an empty file
            problems.append(f"{name} unreadable ({' '.join(str(exc).split())[:80]})")
            continue
        if problems:
            log.warning("%s: %s; resuming from %s", directory, "; ".join(problems), name)
        return saved
    raise InputError(f"no readable checkpoint: {'; '.join(problems)}", where=str(directory),
                     fix="start the run afresh (without --resume)")
