"""The data path: the decoded-image cache against decoding every image file every epoch.

Data set: N JPEG files (quality 90, 256 x 256 RGB) in a temporary folder, made from the
embedded MNIST digits upscaled with PIL bilinear (cycled when N > 5,000). Writing them is
setup and is not timed.

Variants, each producing EPOCHS epochs of shuffled batches of B normalised float tensors
(B, 3, S, S):
  a. decode every epoch, workers=0: a torch Dataset whose __getitem__ opens and decodes the
     file with clipsearch's own `decode_image` (so the decode is identical) and normalises it
     with `to_float_images`; a DataLoader with shuffle=True and num_workers=0.
  b. decode every epoch, workers=2: the same with num_workers=2, the usual remedy.
  c. clipsearch decoded cache: epoch 1 calls `decode_images` (a cache miss: every file decoded
     once, threaded, written to a .npy), later epochs call it again (a cache hit: the .npy is
     memory-mapped, nothing decoded); a batch is rows of that array through `to_float_images`.

Every batch's wait is timed (the time `next()` takes: what a training step would wait if
nothing overlapped it), and every epoch. The epochs run variant by variant in turn, in
alternating order (a b c, then c b a, ...), so that load from other processes on a shared
machine falls on all alike; every variant draws its order from a generator with the same seed.

Threads: the main process runs torch with `threads` intra-op threads (default 1), as DataLoader
workers always do. On a 2-core machine busy with other work, normalising one image in the main
process with 2 threads took 34 ms (OpenMP threads waiting for a core) against 1-2 ms with one:
with the default the variants differ in where and how often they decode, not in contention.

Figures per variant: median ms per batch, seconds per epoch (the median over all epochs; for
the cache over the epochs after the first, whose cost is reported apart as the cache build),
images/s and the epoch speed relative to variant a. For the cache also: the size of its file
and the break-even, the fewest epochs after which building the cache plus its epochs has cost
no more than decoding every epoch.

Checks, which raise: every epoch of the cache after the first is a hit (its .npy file is the
one the first epoch wrote), and the first batch of variants a and b equals, image for image,
the cache's rows for the same indices (torch.equal).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from ..data.batches import to_float_images
from ..data.cache import decode_image, decode_images
from .common import environment, write_result

SEED = 0
FILE_SIZE = 256
JPEG_QUALITY = 90
#: images of each variant's first batch kept for the correctness check
CHECKED_IMAGES = 8

VARIANTS = {
    "decode_workers0": "decode every epoch, workers=0",
    "decode_workers2": "decode every epoch, workers=2",
    "cache": "clipsearch decoded cache",
}
BASELINE = "decode_workers0"


# --------------------------------------------------------------------------- data set


def write_jpegs(count: int, folder: Path) -> list[Path]:
    """`count` 256 x 256 RGB JPEGs of MNIST digits in `folder`: a file-based data set."""
    from ..data.embedded import load_mnist

    digits, _ = load_mnist()
    files = []
    for i in range(count):
        gray = Image.fromarray(np.round(digits[i % len(digits)] * 255).astype(np.uint8), "L")
        image = gray.resize((FILE_SIZE, FILE_SIZE), Image.Resampling.BILINEAR).convert("RGB")
        path = folder / f"{i:06d}.jpg"
        image.save(path, quality=JPEG_QUALITY)
        files.append(path)
    return files


class DecodePerItem(torch.utils.data.Dataset):
    """Opens and decodes the file at every access, as a training script usually starts."""

    def __init__(self, files: list[Path], size: int):
        self.files, self.size = files, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        # the cache's own decode and normalisation, so that only where the decode happens differs
        return to_float_images(decode_image(self.files[i], self.size)[None])[0], i


# --------------------------------------------------------------------------- timing


@dataclass
class Epoch:
    seconds: float
    batch_seconds: list[float]
    #: (images, indices) of the first CHECKED_IMAGES images of the first batch
    sample: tuple[torch.Tensor, torch.Tensor]
    #: the cache only: seconds in decode_images, and whether it was a cache hit
    open_seconds: float | None = None
    cache_hit: bool | None = None


def _timed_batches(batches: Iterable) -> tuple[list[float], tuple[torch.Tensor, torch.Tensor]]:
    """Seconds each batch took to arrive (starting the iterator counts towards the first)."""
    waits, sample = [], None
    started = time.perf_counter()
    iterator = iter(batches)
    while True:
        try:
            images, index = next(iterator)
        except StopIteration:
            break
        waits.append(time.perf_counter() - started)
        if sample is None:
            sample = (images[:CHECKED_IMAGES].clone(), index[:CHECKED_IMAGES].clone())
        started = time.perf_counter()
    return waits, sample


def loader_epoch(loader: torch.utils.data.DataLoader) -> Epoch:
    started = time.perf_counter()
    waits, sample = _timed_batches(loader)
    return Epoch(time.perf_counter() - started, waits, sample)


def _cache_files(cache_dir: Path) -> set[tuple[str, int, int]]:
    return {(p.name, p.stat().st_ino, p.stat().st_mtime_ns) for p in cache_dir.glob("*.npy")}


def _array_batches(images: np.ndarray, order: np.ndarray, batch: int) -> Iterator:
    for start in range(0, len(order), batch):
        index = order[start:start + batch]
        yield to_float_images(images[index]), torch.from_numpy(index)


def cache_epoch(files: list[Path], size: int, cache_dir: Path, batch: int,
                generator: torch.Generator) -> Epoch:
    """One epoch from the decoded-image cache: open it (building it on a miss), then batch."""
    before = _cache_files(cache_dir)
    started = time.perf_counter()
    decoded = decode_images(files, size, cache_dir, progress=False)
    opened = time.perf_counter()
    order = torch.randperm(len(decoded.images), generator=generator).numpy()
    waits, sample = _timed_batches(_array_batches(decoded.images, order, batch))
    hit = bool(before) and _cache_files(cache_dir) == before
    return Epoch(time.perf_counter() - started, waits, sample, opened - started, hit)


# --------------------------------------------------------------------------- checks


def check_same_images(expected: torch.Tensor, actual: torch.Tensor, what: str) -> None:
    """Raise unless both batches hold exactly the same normalised images."""
    if expected.shape != actual.shape or not torch.equal(expected, actual):
        worst = ((expected - actual).abs().max().item() if expected.shape == actual.shape
                 else f"shapes {tuple(expected.shape)} and {tuple(actual.shape)}")
        raise RuntimeError(f"{what}: the batches differ (largest difference: {worst})")


def _check_runs(runs: dict[str, list[Epoch]], files: list[Path], size: int, cache_dir: Path) -> None:
    cache = runs["cache"]
    missed = [i + 1 for i, epoch in enumerate(cache[1:], start=1) if not epoch.cache_hit]
    if missed:
        raise RuntimeError(f"epochs {missed} of the decoded cache did not hit the cache built in epoch 1")
    images = decode_images(files, size, cache_dir, progress=False).images
    for variant in ("decode_workers0", "decode_workers2"):
        expected, index = runs[variant][0].sample
        check_same_images(expected, to_float_images(images[index.numpy()]),
                          f"{VARIANTS[variant]} against {VARIANTS['cache']}")


# --------------------------------------------------------------------------- figures


def _variant_summary(epochs: list[Epoch], images: int) -> dict:
    seconds = statistics.median(e.seconds for e in epochs)
    return {"ms_per_batch": 1000 * statistics.median(w for e in epochs for w in e.batch_seconds),
            "max_ms_per_batch": 1000 * max(w for e in epochs for w in e.batch_seconds),
            "seconds_per_epoch": seconds, "images_per_s": images / seconds, "epochs_timed": len(epochs)}


def break_even_epochs(first_epoch: float, later_epoch: float, decode_epoch: float) -> int | None:
    """Fewest epochs k with first + (k - 1) * later <= k * decode; None when never."""
    if first_epoch <= decode_epoch:
        return 1
    if later_epoch >= decode_epoch:
        return None
    return math.ceil((first_epoch - later_epoch) / (decode_epoch - later_epoch))


def summarise(runs: dict[str, list[Epoch]], images: int, cache_file: Path) -> dict:
    summary = {v: _variant_summary(runs[v], images) for v in ("decode_workers0", "decode_workers2")}
    cache = runs["cache"]
    summary["cache"] = {
        **_variant_summary(cache[1:], images),  # cache hits only: the build is apart
        "build_seconds": cache[0].open_seconds, "first_epoch_seconds": cache[0].seconds,
        "open_seconds_on_hit": statistics.median(e.open_seconds for e in cache[1:]),
        "cache_mb": cache_file.stat().st_size / 2**20,
    }
    base = summary[BASELINE]["seconds_per_epoch"]
    for figures in summary.values():
        figures["epoch_speed_vs_workers0"] = base / figures["seconds_per_epoch"]
    hit = summary["cache"]["seconds_per_epoch"]
    summary["cache"]["break_even_epochs"] = {
        v: break_even_epochs(cache[0].seconds, hit, summary[v]["seconds_per_epoch"])
        for v in ("decode_workers0", "decode_workers2")}
    return summary


# --------------------------------------------------------------------------- the run


def _loaders(files: list[Path], size: int, batch: int) -> dict[str, torch.utils.data.DataLoader]:
    dataset = DecodePerItem(files, size)
    return {f"decode_workers{w}": torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=w,
        generator=torch.Generator().manual_seed(SEED)) for w in (0, 2)}


def _run_epochs(files: list[Path], size: int, batch: int, epochs: int, cache_dir: Path) -> dict[str, list[Epoch]]:
    loaders = _loaders(files, size, batch)
    cache_generator = torch.Generator().manual_seed(SEED)
    runs: dict[str, list[Epoch]] = {v: [] for v in VARIANTS}
    for epoch in range(epochs):
        order = list(VARIANTS) if epoch % 2 == 0 else list(VARIANTS)[::-1]
        for variant in order:
            if variant == "cache":
                timing = cache_epoch(files, size, cache_dir, batch, cache_generator)
            else:
                timing = loader_epoch(loaders[variant])
            runs[variant].append(timing)
    return runs


def _epochs_record(runs: dict[str, list[Epoch]]) -> dict:
    """Per variant, per epoch: seconds and every batch's wait in ms (the JSON keeps them all)."""
    return {v: [{"seconds": e.seconds, "batch_ms": [round(1000 * w, 3) for w in e.batch_seconds],
                 **({"open_seconds": e.open_seconds, "cache_hit": e.cache_hit} if e.open_seconds is not None else {})}
                for e in epochs] for v, epochs in runs.items()}


def _measure(images: int, size: int, batch: int, epochs: int, threads: int) -> tuple[dict, dict]:
    """(figures per variant, timings per epoch) of one run on a fresh set of files."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="clipsearch-bench-data-") as tmp:
            files = write_jpegs(images, Path(tmp))
            cache_dir = Path(tmp) / "cache"
            runs = _run_epochs(files, size, batch, epochs, cache_dir)
            _check_runs(runs, files, size, cache_dir)
            (cache_file,) = cache_dir.glob("*.npy")
            return summarise(runs, images, cache_file), _epochs_record(runs)
    finally:
        torch.set_num_threads(previous)


def run_data_benchmark(images: int = 2000, size: int = 224, batch: int = 128, epochs: int = 3,
                       threads: int = 1, out_dir: Path = Path("results/benchmarks")) -> dict:
    if epochs < 2:
        raise ValueError("the cache needs at least 2 epochs: one to build it, one to read it")
    # other processes on a shared machine slow workers and threads most: say how busy it was
    load_at_start = os.getloadavg()[0]
    summary, per_epoch = _measure(images, size, batch, epochs, threads)
    result = {
        "benchmark": "data", "environment": environment(),
        "command": f"clipsearch bench data --images {images} --size {size} --batch {batch} --epochs {epochs}"
                   f" --threads {threads}",
        "setting": {"images": images, "file": f"JPEG quality {JPEG_QUALITY}, {FILE_SIZE}x{FILE_SIZE} RGB",
                    "image_size": size, "batch_size": batch, "epochs": epochs, "shuffle_seed": SEED,
                    "torch_threads": threads, "epoch_order": "alternating (a b c, c b a, ...)",
                    "load_average_at_start": load_at_start},
        "variants": summary, "cache_build_seconds": summary["cache"]["build_seconds"], "checks": {"cache_hits_after_epoch_1": True, "same_images_as_cache": True},
        "epochs": per_epoch,
    }
    path = write_result(out_dir, "data", result, _table_rows(summary),
                        ("variant", "wait ms/batch, median (max)", "s/epoch", "images/s", "epoch speed vs workers=0"))
    _append_notes(path, summary, epochs, threads, load_at_start)
    print(path.read_text())
    return result


def _table_rows(summary: dict) -> list[tuple]:
    rows = [(VARIANTS[v] + (" (epochs 2+, cache hits)" if v == "cache" else ""),
             f"{s['ms_per_batch']:.1f} ({s['max_ms_per_batch']:.0f})", f"{s['seconds_per_epoch']:.2f}",
             f"{s['images_per_s']:.0f}", f"{s['epoch_speed_vs_workers0']:.2f}x") for v, s in summary.items()]
    cache = summary["cache"]
    base = summary[BASELINE]["seconds_per_epoch"]
    rows.append((VARIANTS["cache"] + " (epoch 1: builds the cache)", "-",
                 f"{cache['first_epoch_seconds']:.2f}", "-", f"{base / cache['first_epoch_seconds']:.2f}x"))
    return rows


def _append_notes(path: Path, summary: dict, epochs: int, threads: int, load: float) -> None:
    cache = summary["cache"]

    def epochs_text(count):
        return "never" if count is None else f"{count} epoch{'s' if count > 1 else ''}"

    even = cache["break_even_epochs"]
    notes = [
        "",
        f"Cache: built once in {cache['build_seconds']:.2f} s (threaded decode of every file into a "
        f"{cache['cache_mb']:.1f} MB .npy); a cache hit opens it in {1000 * cache['open_seconds_on_hit']:.1f} ms "
        f"(memory map, nothing decoded). Break-even, build included: against workers=0 after "
        f"{epochs_text(even['decode_workers0'])}, against workers=2 after {epochs_text(even['decode_workers2'])}.",
        "",
        f"Wait ms/batch: the time `next()` takes for one batch (median over all batches of {epochs} epochs; "
        f"for the cache over the epochs after the first). torch threads in the main process: {threads} "
        f"(DataLoader workers always use 1); load average at the start: {load:.1f} on {os.cpu_count()} cores. "
        "Correctness: the first batch of both decode-every-epoch variants equals the cache's rows for the "
        "same images (torch.equal).",
    ]
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(notes) + "\n")
