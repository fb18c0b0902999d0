"""bench train's open_clip anchor: the same towers as clipsearch's model, trained by open_clip's
recipe (ClipLoss, its logit scale clamped)."""

import math

import pytest
import torch

from clipsearch.bench.train_speed import bench_config, build_open_clip_model, clipsearch_step, open_clip_step
from clipsearch.losses import build_loss
from clipsearch.models import build_dual_encoder
from clipsearch.optim import build_optimizer

CAPTIONS = ["a thick seven leaning right", "the digit 3", "a wide zero with one closed loop", "9 in thin ink"]


@pytest.fixture(scope="module")
def cfg():
    return bench_config()


def _trained(model):
    return {n: p.numel() for n, p in model.named_parameters() if p.grad is not None}


def test_the_anchor_trains_as_many_parameters_as_clipsearch(cfg):
    torch.manual_seed(0)
    images = torch.randn(len(CAPTIONS), 3, cfg.data.image_size, cfg.data.image_size)
    ours, tokenize = build_dual_encoder(cfg.model, cfg.data.max_text_length)
    loss = build_loss(cfg.loss.name, cfg.loss.params, num_samples=len(CAPTIONS))
    optimizer = build_optimizer([ours, loss], cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay,
                                cfg.optimizer.params)
    clipsearch_step(ours, loss, optimizer)((images, tokenize(CAPTIONS), torch.arange(len(CAPTIONS))))
    anchor, tokenizer = build_open_clip_model(cfg.model, cfg.data.image_size, cfg.data.max_text_length)
    before = [p.detach().clone() for p in anchor.visual.parameters()]
    open_clip_step(anchor, cfg.optimizer.lr, cfg.optimizer.weight_decay)((images, tokenizer(CAPTIONS)))
    # the same towers and projections; open_clip adds its learnable logit scale (one number)
    assert sum(_trained(anchor).values()) == sum(_trained(ours).values()) + 1
    assert len(anchor.text.transformer.encoder.layer) == cfg.model.text_layers
    assert any(not torch.equal(b, p) for b, p in zip(before, anchor.visual.parameters()))  # the step moved it


def test_the_anchor_clamps_its_logit_scale_as_open_clip_does(cfg):
    anchor, tokenizer = build_open_clip_model(cfg.model, cfg.data.image_size, cfg.data.max_text_length)
    with torch.no_grad():
        anchor.logit_scale.fill_(10.0)  # exp(10) = 22026, far above open_clip's bound of 100
    images = torch.randn(len(CAPTIONS), 3, cfg.data.image_size, cfg.data.image_size)
    open_clip_step(anchor, cfg.optimizer.lr, cfg.optimizer.weight_decay)((images, tokenizer(CAPTIONS)))
    assert anchor.logit_scale.item() == pytest.approx(math.log(100))
