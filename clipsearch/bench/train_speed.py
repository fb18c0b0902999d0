"""Training-step throughput: clipsearch's data path against a naive loop, same model and data.

The naive loop is how a training script usually starts (and how seed 000 started): a
`Dataset` that opens and decodes each image file with PIL and transforms it per item, every
step; captions tokenised per batch; fp32; a DataLoader with num_workers=0. clipsearch's path
decodes once into an array (the decoded-image cache), tokenises each distinct caption once and
builds a batch by tensor indexing. Both run the same model, loss and optimizer step; the
variants alternate step by step so that load on this shared machine hits both alike, and each
step's time is split into the wait for the batch and the compute.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

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


def _step(model, loss_fn, optimizer, images, tokens, index):
    image_emb, text_emb = model(images, tokens)
    loss = loss_fn(image_emb, text_emb, index=index)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _timed_step(next_batch, model, loss_fn, optimizer) -> tuple[float, float]:
    """(seconds waiting for the batch, seconds in forward/backward/step) of one step."""
    started = time.perf_counter()
    images, tokens, index = next_batch()
    ready = time.perf_counter()
    _step(model, loss_fn, optimizer, images, tokens, index)
    return ready - started, time.perf_counter() - ready


def _batch_sources(batches, loader, tokenize):
    """Endless next-batch functions for both variants: (images, tokens, index) each."""
    generator = torch.Generator().manual_seed(0)

    def ours():
        while True:
            for b in batches.epoch(generator):
                yield b.images, b.tokens, b.index

    def naive():
        while True:
            for images, captions, index in loader:
                yield images, tokenize(list(captions)), index

    ours_it, naive_it = ours(), naive()
    return lambda: next(ours_it), lambda: next(naive_it)


def _summary(times: list[tuple[float, float]], batch: int) -> dict:
    """Medians per step: the data wait, the compute, and the throughput they give."""
    data = statistics.median(t[0] for t in times)
    compute = statistics.median(t[1] for t in times)
    total = statistics.median(t[0] + t[1] for t in times)
    return {"steps_per_s": 1.0 / total, "samples_per_s": batch / total, "data_ms_per_step": 1000 * data,
            "compute_ms_per_step": 1000 * compute, "steps": len(times)}


def run_train_benchmark(steps: int = 20, out_dir: Path = Path("results/benchmarks")) -> dict:
    cfg = load_config(quick=True)
    torch.manual_seed(0)
    torch.set_num_threads(cfg.train.threads or torch.get_num_threads())
    data = load_training_set(cfg.data)
    model, tokenize = build_dual_encoder(cfg.model, cfg.data.max_text_length)
    loss_fn = build_loss(cfg.loss.name, cfg.loss.params, num_samples=len(data))
    optimizer = build_optimizer([model, loss_fn], cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay,
                                cfg.optimizer.params)
    batch = cfg.train.batch_size
    batches = PairBatches(data, TextBank.build(data.captions, tokenize), batch, augment=False)
    with tempfile.TemporaryDirectory() as tmp:
        files = _write_pngs(data.images, Path(tmp))
        loader = torch.utils.data.DataLoader(NaivePairs(files, data.captions, data.image_size), batch_size=batch,
                                             shuffle=True, num_workers=0, drop_last=True)
        ours_next, naive_next = _batch_sources(batches, loader, tokenize)
        for _ in range(2):  # warm-up: first-call allocations
            _timed_step(ours_next, model, loss_fn, optimizer)
            _timed_step(naive_next, model, loss_fn, optimizer)
        # one step of each in turn, so that load from other processes on this shared machine
        # falls on both variants alike
        ours, naive = [], []
        for _ in range(steps):
            ours.append(_timed_step(ours_next, model, loss_fn, optimizer))
            naive.append(_timed_step(naive_next, model, loss_fn, optimizer))
    summary = {name: _summary(times, batch) for name, times in (("clipsearch", ours), ("naive", naive))}
    result = {
        "benchmark": "train_step_throughput", "command": f"clipsearch bench train --steps {steps}",
        "environment": environment(),
        "setting": {"model": f"{cfg.model.image_tower} + {cfg.model.text_tower} ({cfg.model.text_layers} layer)",
                    "image_size": cfg.data.image_size, "batch_size": batch, "precision": "fp32",
                    "steps_per_variant": steps, "interleaved": True},
        **summary,
        "speedup_steps_per_s": summary["clipsearch"]["steps_per_s"] / summary["naive"]["steps_per_s"],
        "data_wait_ratio": summary["naive"]["data_ms_per_step"] / summary["clipsearch"]["data_ms_per_step"],
    }
    rows = [(label, f"{summary[key]['steps_per_s']:.3f}", f"{summary[key]['samples_per_s']:.0f}",
             f"{summary[key]['data_ms_per_step']:.1f}", f"{summary[key]['compute_ms_per_step']:.0f}",
             f"{summary[key]['steps_per_s'] / summary['naive']['steps_per_s']:.2f}x")
            for key, label in (("clipsearch", "clipsearch (decoded cache, pre-tokenised)"),
                               ("naive", "naive (PIL per item, tokenise per batch, workers=0)"))]
    path = write_result(out_dir, "train", result, rows,
                        ("variant", "steps/s", "samples/s", "data wait ms/step", "compute ms/step", "ratio"))
    print(path.read_text())
    return result
