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
- clipsearch: the training loop's own step (`clipsearch.train.build_run`: `Run.step`, the
  forward and loss under autocast, the non-finite stop, backward, gradient clipping, the
  optimizer's and the schedule's step) on the loop's own batches (`run.setup.batches`: the
  decoded-image cache, an array, each distinct caption tokenised once, a batch built by tensor
  indexing); the quick preset's model, loss and optimizer. The naive variant feeds its batches
  to the same `Run.step`.

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
from ..data.batches import MEAN, STD, PairBatch
from ..models import build_text_tower
from ..train import Run, build_run
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


def _tokenizer(cfg) -> Callable[[list[str]], dict]:
    """The text tower's tokenizer, as clipsearch's model uses it (the naive loop tokenises per
    batch; built with a second, tiny copy of the tower, which is not timed)."""
    return build_text_tower(cfg.model.text_tower, cfg.model.text_weights, cfg.model.text_layers,
                            cfg.data.max_text_length).tokenize


def naive_batches(data, tokenize, batch: int, folder: Path) -> Callable[[], Iterator[PairBatch]]:
    """An epoch of the naive loop: the images written as PNG files into FOLDER, each decoded and
    transformed per item by a DataLoader without workers, the captions tokenised per batch."""
    files = _write_pngs(data.images, folder)
    loader = torch.utils.data.DataLoader(NaivePairs(files, data.captions, data.image_size), batch_size=batch,
                                         shuffle=True, num_workers=0, drop_last=True)

    def epoch():
        for images, captions, index in loader:
            yield PairBatch(images, tokenize(list(captions)), index, None)
    return epoch


def open_clip_batches(run: Run, tokenizer) -> Iterator[tuple]:
    """An epoch of the loop's image batches, their first captions tokenised by open_clip per
    batch: the anchor is fed the same images as clipsearch's step."""
    captions = run.setup.batches.data.captions
    generator = torch.Generator().manual_seed(0)
    for b in run.setup.batches.epoch(generator):
        yield b.images, tokenizer([captions[i][0] for i in b.index.tolist()])


def _time_interleaved(variants: list[Variant], steps: int) -> None:
    for _ in range(2):  # warm-up: first-call allocations
        for v in variants:
            v.timed_step()
            v.times.clear()
    # one step of each in turn, so that load from other processes on this shared machine
    # falls on all variants alike
    for _ in range(steps):
        for v in variants:
            v.timed_step()


def _precision(run: Run) -> str:
    """What the step computes in: autocast's dtype, or fp32 without autocast."""
    dtype = getattr(run.autocast, "fast_dtype", None)
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


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
    run = build_run(cfg)  # the loop's own data, model, loss, optimizer, schedule and step
    data = run.setup.batches.data
    oc_model, oc_tokenizer = build_open_clip_model(cfg.model, cfg.data.image_size, cfg.data.max_text_length)
    batch = cfg.train.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        naive_epoch = naive_batches(data, _tokenizer(cfg), batch, Path(tmp))
        variants = [
            Variant("clipsearch", "clipsearch (decoded cache, pre-tokenised)",
                    _endless(lambda: run.setup.batches.epoch(run.generator)), run.step),
            Variant("naive", "naive (PIL per item, tokenise per batch, workers=0)", _endless(naive_epoch),
                    run.step),
            Variant("open_clip", "open_clip's step (same towers and images, ClipLoss, HFTokenizer per batch)",
                    _endless(lambda: open_clip_batches(run, oc_tokenizer)),
                    open_clip_step(oc_model, cfg.optimizer.lr, cfg.optimizer.weight_decay)),
        ]
        _time_interleaved(variants, steps)
    summary = {v.key: _summary(v.times, batch) for v in variants}
    result = {
        "benchmark": "train_step_throughput", "command": f"clipsearch bench train --steps {steps}",
        "environment": environment(),
        "setting": {"model": f"{cfg.model.image_tower} + {cfg.model.text_tower} ({cfg.model.text_layers} layer)",
                    "trained_parameters": {"clipsearch": _trained_parameters(run.model),
                                           "open_clip": _trained_parameters(oc_model)},
                    "loss": {"clipsearch": cfg.loss.name, "open_clip": "ClipLoss"},
                    "image_size": cfg.data.image_size, "batch_size": batch, "precision": _precision(run),
                    "steps_per_variant": steps, "interleaved": True,
                    "clipsearch_step": "clipsearch.train.Run.step, the loop's own (build_run)"},
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
