"""Training-step throughput: clipsearch's data path against a naive loop, same model and data.

The naive loop is how a training script usually starts (and how seed 000 started): a
`Dataset` that opens and decodes each image file with PIL and transforms it per item, every
step; captions tokenised per batch; fp32; a DataLoader with num_workers=0. clipsearch's path
decodes once into an array (the decoded-image cache), tokenises each distinct caption once and
builds a batch by tensor indexing. Both run the same model, loss and optimizer step; the
variants alternate in rounds so that load on this shared machine hits both alike.
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


def _time_clipsearch(model, loss_fn, optimizer, batches, steps) -> float:
    generator = torch.Generator().manual_seed(0)
    it = batches.epoch(generator)
    start = time.perf_counter()
    for _ in range(steps):
        b = next(it)
        _step(model, loss_fn, optimizer, b.images, b.tokens, b.index)
    return steps / (time.perf_counter() - start)


def _time_naive(model, loss_fn, optimizer, loader, tokenize, steps) -> float:
    it = iter(loader)
    start = time.perf_counter()
    for _ in range(steps):
        images, captions, index = next(it)
        _step(model, loss_fn, optimizer, images, tokenize(list(captions)), index)
    return steps / (time.perf_counter() - start)


def run_train_benchmark(steps: int = 20, rounds: int = 3, out_dir: Path = Path("results/benchmarks")) -> dict:
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
        _time_clipsearch(model, loss_fn, optimizer, batches, 2)  # warm-up: first-call allocations
        _time_naive(model, loss_fn, optimizer, loader, tokenize, 2)
        ours, naive = [], []
        for _ in range(rounds):
            ours.append(_time_clipsearch(model, loss_fn, optimizer, batches, steps))
            naive.append(_time_naive(model, loss_fn, optimizer, loader, tokenize, steps))
    ours_med, naive_med = statistics.median(ours), statistics.median(naive)
    result = {
        "benchmark": "train_step_throughput", "command": f"clipsearch bench train --steps {steps}",
        "environment": environment(),
        "setting": {"model": f"{cfg.model.image_tower} + {cfg.model.text_tower} ({cfg.model.text_layers} layer)",
                    "image_size": cfg.data.image_size, "batch_size": batch, "precision": "fp32",
                    "steps_per_round": steps, "rounds": rounds},
        "clipsearch_steps_per_s": ours, "naive_steps_per_s": naive,
        "clipsearch_median": ours_med, "naive_median": naive_med, "speedup": ours_med / naive_med,
    }
    rows = [("clipsearch (decoded cache, pre-tokenised)", f"{ours_med:.2f}", f"{ours_med * batch:.0f}", f"{ours_med / naive_med:.2f}x"),
            ("naive (PIL per item, tokenise per batch, workers=0)", f"{naive_med:.2f}", f"{naive_med * batch:.0f}", "1.00x")]
    path = write_result(out_dir, "train", result, rows, ("variant", "steps/s (median)", "samples/s", "ratio"))
    print(path.read_text())
    return result
