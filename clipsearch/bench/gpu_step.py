"""The training step of seed 001's model at full size: samples/s and the share of the device's
peak dense bf16 FLOP/s it reaches (model FLOPs utilisation).

The model is the default preset's: ResNet-50 (timm) + DistilBERT, 224 px, linear projections to
256, built with random weights from their architectures alone (nothing is downloaded; FLOPs
and speed do not depend on the weights). Batches are synthetic and already on the device, so
the figure is the step itself: the loop's own `Run.step` (clipsearch.train.run_from_setup around
the image-text task's `pair_step`: autocast, the channels-last layout, the default loss, the
non-finite check, scaled backward, clipping as the config says, AdamW and the schedule's step).
FLOPs per step are counted once with torch's FlopCounterMode (matmuls and convolutions, forward
and backward).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from ..config import load_config
from ..data.batches import PairBatch
from ..losses import build_loss
from ..models import DualEncoder, HFTextEncoder, build_image_tower
from ..tasks import Setup
from ..tasks.image_text import pair_step
from ..train import run_from_setup
from .common import environment, write_result

#: dense bf16 tensor-core peak, FLOP/s, by a name that appears in torch.cuda.get_device_name()
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "RTX 4090": 165e12, "V100": None}


def peak_bf16(device_name: str | None) -> float | None:
    for key, value in PEAK_BF16.items():
        if device_name and key in device_name:
            return value
    return None


def build_seed001_model(embed_dim: int) -> DualEncoder:
    from transformers import DistilBertConfig, DistilBertModel

    image, image_width = build_image_tower("timm:resnet50")
    text = DistilBertModel(DistilBertConfig())  # distilbert-base-uncased's architecture
    return DualEncoder(image, image_width, HFTextEncoder(text), text.config.dim, embed_dim)


def _synthetic_batch(batch: int, size: int, length: int, vocab: int, device: torch.device) -> PairBatch:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator)
    tokens = {"input_ids": torch.randint(0, vocab, (batch, length), generator=generator),
              "attention_mask": torch.ones(batch, length, dtype=torch.long)}
    return PairBatch(images.to(device), {k: v.to(device) for k, v in tokens.items()},
                     torch.arange(batch, device=device), None)


def _count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def run_gpu_step_benchmark(batch: int = 256, steps: int = 20, precision: str = "bf16", device: str = "cuda",
                           size: int = 224, out_dir: Path = Path("results/benchmarks")) -> dict:
    cfg = load_config(overrides=[f"train.precision={precision}", f"train.epochs={steps + 4}"])
    dev = torch.device(device)
    model = build_seed001_model(cfg.model.embed_dim).to(dev)
    loss_fn = build_loss(cfg.loss.name, cfg.loss.params, num_samples=batch).to(dev)
    data = _synthetic_batch(batch, size, cfg.data.max_text_length, model.text_tower.model.config.vocab_size, dev)
    # one synthetic batch an "epoch": the schedule is sized by it; no evaluation runs here
    setup = Setup(model, [data], loss_fn, evaluator=None, step=pair_step, train_images=batch, skipped_images=0)
    run = run_from_setup(cfg, setup, dev)
    model.train()

    def step():
        run.step(data)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(3):  # warm-up: cuDNN autotuning, allocator
        step()
    flops = _count_flops(step)
    times = []
    for _ in range(steps):
        sync()
        started = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    env = environment()
    peak = peak_bf16(env["cuda"]) if precision == "bf16" and dev.type == "cuda" else None
    achieved = flops / seconds
    result = {
        "benchmark": "gpu_step", "environment": env,
        "command": f"clipsearch bench gpu --batch {batch} --steps {steps} --precision {precision} --device {device}",
        "setting": {"model": "timm:resnet50 + DistilBERT (random init), embed 256", "image_size": size,
                    "batch_size": batch, "precision": precision, "loss": cfg.loss.name, "optimizer": cfg.optimizer.name,
                    "data": "synthetic, on the device"},
        "seconds_per_step": seconds, "samples_per_s": batch / seconds, "flops_per_step": flops,
        "achieved_flops_per_s": achieved, "peak_bf16_flops_per_s": peak,
        "share_of_peak": achieved / peak if peak else None,
    }
    rows = [("clipsearch Run.step", f"{batch / seconds:.0f}", f"{1000 * seconds:.1f}", f"{flops / 1e12:.2f}",
             f"{achieved / 1e12:.1f}", "-" if not peak else f"{100 * achieved / peak:.1f}%")]
    path = write_result(out_dir, "gpu", result, rows,
                        ("variant", "samples/s", "ms/step", "TFLOP/step", "TFLOP/s", "share of peak bf16"))
    print(path.read_text())
    return result
