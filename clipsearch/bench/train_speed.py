"""Training-step throughput: clipsearch's step against two anchors on the same model, batch
and data.

- naive: how a training script usually starts (and how seed 000 started): a `Dataset` that
  opens and decodes each image file with PIL and transforms it per item, every step; captions
  tokenised per batch; fp32; a DataLoader with num_workers=0; clipsearch's model, loss and
  optimizer.
- open_clip: open_clip's own training step: the same towers built by open_clip (a
  `CustomTextCLIP` with timm's image tower and the same transformers text encoder, cut to the
  same layers, linear projections to the same width), `open_clip.ClipLoss` with its learnable
  logit scale clamped after each step, AdamW without weight decay on gains, biases and the
  scale, captions tokenised by open_clip's `HFTokenizer` per batch. It is fed the same image
  tensors as clipsearch's step, so the comparison is of the step itself. (open_clip's training
  script, `open_clip_train`, is not on PyPI; the step is written here from its documented
  recipe.)
- clipsearch: the decoded-image cache (an array), each distinct caption tokenised once, a
  batch built by tensor indexing; the quick preset's model, loss and optimizer.

The variants alternate step by step so that load on this shared machine hits all alike, and
each step's time is split into the wait for the batch and the compute.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from ..config import load_config
from ..data import load_training_set
from ..data.batches import MEAN, STD, PairBatches, TextBank
from ..losses import build_loss
from ..models import build_dual_encoder
from ..optim import build_optimizer
from .common import environment, write_result


class NaivePairs(torch.utils.data.Dataset):
    """PIL decode + torchvision transform of each item at every access."""

    def __init__(self, files: list[Path], captions: list[list[str]], size: int):
        import torchvision.transforms as T

        self.files, self.captions = files, captions
        self.transform = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(),
                                    T.Normalize(MEAN.flatten().tolist(), STD.flatten().tolist())])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as img:
            x = self.transform(img.convert("RGB"))
        return x, self.captions[i][0], i


def _write_pngs(images: np.ndarray, folder: Path) -> list[Path]:
    files = []
    for i, img in enumerate(images):
        path = folder / f"{i}.png"
        Image.fromarray(img).save(path)
        files.append(path)
    return files


def clipsearch_step(model, loss_fn, optimizer) -> Callable[[tuple], None]:
    def step(batch):
        images, tokens, index = batch
        image_emb, text_emb = model(images, tokens)
        loss = loss_fn(image_emb, text_emb, index=index)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def build_open_clip_model(model_cfg, image_size: int, max_text_length: int):
    """The quick preset's towers as open_clip builds them: (model, tokenizer)."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from ..models import _hf_path, _split_spec, _truncate_layers

    image_kind, image_name = _split_spec(model_cfg.image_tower, "model.image_tower")
    text_kind, text_name = _split_spec(model_cfg.text_tower, "model.text_tower")
    if (image_kind, text_kind) != ("timm", "hf"):
        raise ValueError("the open_clip anchor is built for a timm image tower and an hf text tower")
    path = _hf_path(text_name)
    vision = CLIPVisionCfg(timm_model_name=image_name, timm_pool="avg", timm_proj="linear", image_size=image_size)
    text = CLIPTextCfg(hf_model_name=path, hf_tokenizer_name=path, hf_proj_type="linear",
                       hf_pooler_type="mean_pooler", context_length=max_text_length)
    model = open_clip.CustomTextCLIP(model_cfg.embed_dim, vision, text, output_dict=True)
    _truncate_layers(model.text.transformer, model_cfg.text_layers)
    return model, open_clip.tokenizer.HFTokenizer(path, context_length=max_text_length)


def open_clip_step(model, lr: float, weight_decay: float) -> Callable[[tuple], None]:
    """open_clip's recipe: ClipLoss on its learnable logit scale, AdamW without weight decay on
    gains, biases and the scale, the scale clamped to at most 100 after each step."""
    import open_clip

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "logit_scale" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=lr)
    loss_fn = open_clip.ClipLoss()

    def step(batch):
        images, texts = batch
        out = model(images, texts)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    return step


@dataclass
class Variant:
    key: str
    label: str
    next_batch: Callable[[], tuple]
    step: Callable[[tuple], None]
    times: list[tuple[float, float]] = field(default_factory=list)

    def timed_step(self) -> None:
        """One step: (seconds waiting for the batch, seconds in forward/backward/step)."""
        started = time.perf_counter()
        batch = self.next_batch()
        ready = time.perf_counter()
        self.step(batch)
        self.times.append((ready - started, time.perf_counter() - ready))


def _endless(epoch: Callable[[], Iterator]) -> Callable[[], tuple]:
    def forever():
        while True:
            yield from epoch()
    it = forever()
    return lambda: next(it)


def _summary(times: list[tuple[float, float]], batch: int) -> dict:
    """Medians per step: the data wait, the compute, and the throughput they give."""
    data = statistics.median(t[0] for t in times)
    compute = statistics.median(t[1] for t in times)
    total = statistics.median(t[0] + t[1] for t in times)
    return {"steps_per_s": 1.0 / total, "samples_per_s": batch / total, "data_ms_per_step": 1000 * data,
            "compute_ms_per_step": 1000 * compute, "steps": len(times)}


def _trained_parameters(model: torch.nn.Module) -> int:
    """Parameters the last step gave a gradient (a tower's unused parts, such as BERT's pooler,
    are left out)."""
    return sum(p.numel() for p in model.parameters() if p.grad is not None)


def bench_config():
    """The quick preset with the step these figures measure: the whole text tower trained, at
    batch 128, as open_clip's anchor step trains it. (The quick preset itself freezes its text
    tower, which then runs once per caption outside the step: the anchors would have nothing
    comparable to time.)"""
    return load_config(quick=True, overrides=["model.freeze_text=none", "train.batch_size=128"])


def run_train_benchmark(steps: int = 20, out_dir: Path = Path("results/benchmarks")) -> dict:
    cfg = bench_config()
    torch.manual_seed(0)
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    data = load_training_set(cfg.data)
    model, tokenize = build_dual_encoder(cfg.model, cfg.data.max_text_length)
    loss_fn = build_loss(cfg.loss.name, cfg.loss.params, num_samples=len(data))
    optimizer = build_optimizer([model, loss_fn], cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay,
                                cfg.optimizer.params)
    oc_model, oc_tokenizer = build_open_clip_model(cfg.model, cfg.data.image_size, cfg.data.max_text_length)
    batch = cfg.train.batch_size
    batches = PairBatches(data, TextBank.build(data.captions, tokenize), batch, augment=False)
    generator = torch.Generator().manual_seed(0)

    def ours_epoch():
        for b in batches.epoch(generator):
            yield b.images, b.tokens, b.index

    def open_clip_epoch():  # the same images; captions tokenised by open_clip per batch
        for b in batches.epoch(generator):
            idx = b.index.numpy()
            yield b.images, oc_tokenizer([data.captions[i][0] for i in idx])

    with tempfile.TemporaryDirectory() as tmp:
        files = _write_pngs(data.images, Path(tmp))
        loader = torch.utils.data.DataLoader(NaivePairs(files, data.captions, data.image_size), batch_size=batch,
                                             shuffle=True, num_workers=0, drop_last=True)

        def naive_epoch():
            for images, captions, index in loader:
                yield images, tokenize(list(captions)), index

        ours_step = clipsearch_step(model, loss_fn, optimizer)
        variants = [
            Variant("clipsearch", "clipsearch (decoded cache, pre-tokenised)", _endless(ours_epoch), ours_step),
            Variant("naive", "naive (PIL per item, tokenise per batch, workers=0)", _endless(naive_epoch), ours_step),
            Variant("open_clip", "open_clip's step (same towers and images, ClipLoss, HFTokenizer per batch)",
                    _endless(open_clip_epoch), open_clip_step(oc_model, cfg.optimizer.lr, cfg.optimizer.weight_decay)),
        ]
        for _ in range(2):  # warm-up: first-call allocations
            for v in variants:
                v.timed_step()
                v.times.clear()
        # one step of each in turn, so that load from other processes on this shared machine
        # falls on all variants alike
        for _ in range(steps):
            for v in variants:
                v.timed_step()
    summary = {v.key: _summary(v.times, batch) for v in variants}
    result = {
        "benchmark": "train_step_throughput", "command": f"clipsearch bench train --steps {steps}",
        "environment": environment(),
        "setting": {"model": f"{cfg.model.image_tower} + {cfg.model.text_tower} ({cfg.model.text_layers} layer)",
                    "trained_parameters": {"clipsearch": _trained_parameters(model),
                                           "open_clip": _trained_parameters(oc_model)},
                    "loss": {"clipsearch": cfg.loss.name, "open_clip": "ClipLoss"},
                    "image_size": cfg.data.image_size, "batch_size": batch, "precision": "fp32",
                    "steps_per_variant": steps, "interleaved": True},
        **summary,
        "speedup_steps_per_s": summary["clipsearch"]["steps_per_s"] / summary["naive"]["steps_per_s"],
        "speedup_over_open_clip": summary["clipsearch"]["steps_per_s"] / summary["open_clip"]["steps_per_s"],
        "data_wait_ratio": summary["naive"]["data_ms_per_step"] / summary["clipsearch"]["data_ms_per_step"],
    }
    naive = summary["naive"]["steps_per_s"]
    rows = [(v.label, f"{summary[v.key]['steps_per_s']:.3f}", f"{summary[v.key]['samples_per_s']:.0f}",
             f"{summary[v.key]['data_ms_per_step']:.1f}", f"{summary[v.key]['compute_ms_per_step']:.0f}",
             f"{summary[v.key]['steps_per_s'] / naive:.2f}x") for v in variants]
    path = write_result(out_dir, "train", result, rows,
                        ("variant", "steps/s", "samples/s", "data wait ms/step", "compute ms/step", "ratio to naive"))
    print(path.read_text())
    return result
