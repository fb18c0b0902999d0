"""bench train's variants: clipsearch's is the loop's own step (Run.step) on the loop's batches,
the naive one feeds that step its own batches, the open_clip anchor trains the same towers by
open_clip's recipe (ClipLoss, its logit scale clamped)."""

import math

import pytest
import torch

from clipsearch.bench.train_speed import (_tokenizer, bench_config, build_open_clip_model, naive_batches,
                                          open_clip_batches, open_clip_step)
from clipsearch.train import build_run

CAPTIONS = ["a thick seven leaning right", "the digit 3", "a wide zero with one closed loop", "9 in thin ink"]


@pytest.fixture(scope="module")
def cfg():
    return bench_config()


@pytest.fixture(scope="module")
def run(cfg):
    return build_run(cfg)


def _trained(model):
    return {n: p.numel() for n, p in model.named_parameters() if p.grad is not None}


def test_the_anchor_trains_as_many_parameters_as_clipsearch(cfg, run):
    run.step(next(iter(run.setup.batches.epoch(run.generator))))  # the loop's step on the loop's batch
    anchor, tokenizer = build_open_clip_model(cfg.model, cfg.data.image_size, cfg.data.max_text_length)
    images, texts = next(open_clip_batches(run, tokenizer))  # the same kind of images
    before = [p.detach().clone() for p in anchor.visual.parameters()]
    open_clip_step(anchor, cfg.optimizer.lr, cfg.optimizer.weight_decay)((images, texts))
    # the same towers and projections; open_clip adds its learnable logit scale (one number)
    assert sum(_trained(anchor).values()) == sum(_trained(run.model).values()) + 1
    assert len(anchor.text.transformer.encoder.layer) == cfg.model.text_layers
    assert any(not torch.equal(b, p) for b, p in zip(before, anchor.visual.parameters()))  # the step moved it


def test_the_naive_batches_feed_the_same_step_as_the_loops(cfg, run, tmp_path):
    step_before = run.state.step
    naive = next(iter(naive_batches(run.setup.batches.data, _tokenizer(cfg), 8, tmp_path)()))
    ours = next(iter(run.setup.batches.epoch(run.generator)))
    assert naive.images.shape[1:] == ours.images.shape[1:] and naive.tokens.keys() == ours.tokens.keys()
    out = run.step(naive)
    assert torch.isfinite(out["loss"]) and run.state.step == step_before + 1  # one update of the loop's


def test_the_anchor_clamps_its_logit_scale_as_open_clip_does(cfg):
    anchor, tokenizer = build_open_clip_model(cfg.model, cfg.data.image_size, cfg.data.max_text_length)
    with torch.no_grad():
        anchor.logit_scale.fill_(10.0)  # exp(10) = 22026, far above open_clip's bound of 100
    images = torch.randn(len(CAPTIONS), 3, cfg.data.image_size, cfg.data.image_size)
    open_clip_step(anchor, cfg.optimizer.lr, cfg.optimizer.weight_decay)((images, tokenizer(CAPTIONS)))
    assert anchor.logit_scale.item() == pytest.approx(math.log(100))


@pytest.mark.slow
def test_the_benchmark_times_every_variant_and_writes_its_table(tmp_path):
    from clipsearch.bench.train_speed import run_train_benchmark

    result = run_train_benchmark(steps=1, out_dir=tmp_path)
    assert {result[k]["steps"] for k in ("clipsearch", "naive", "open_clip")} == {1}
    assert result["setting"]["precision"] == "fp32"  # the loop's autocast on a CPU: none
    assert (tmp_path / "train.json").is_file() and "training step, samples/s" in (tmp_path / "README.md").read_text()
