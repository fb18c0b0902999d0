"""Towers: timm and open_clip image towers, HF and open_clip text towers, weights from disk only."""

import json
import time

import pytest
import torch

from clipsearch.errors import InputError
from clipsearch.models import DualEncoder, build_image_tower, build_text_tower

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / "clipsearch-tiny.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(folder)
    return "clipsearch-tiny"


def test_timm_tower_maps_images_to_its_feature_width():
    tower, width = build_image_tower("timm:test_resnet")
    assert tower(torch.randn(2, 3, 28, 28)).shape == (2, width)


def test_timm_weights_load_from_a_local_file(tmp_path):
    tower, _ = build_image_tower("timm:test_resnet")
    torch.save(tower.state_dict(), tmp_path / "w.pt")
    loaded, _ = build_image_tower("timm:test_resnet", weights=str(tmp_path / "w.pt"))
    for a, b in zip(tower.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_open_clip_towers_build_and_tokenize_offline(tiny_open_clip):
    image, image_width = build_image_tower(f"open_clip:{tiny_open_clip}")
    text = build_text_tower(f"open_clip:{tiny_open_clip}")
    model = DualEncoder(image, image_width, text.module, text.width, embed_dim=8)
    img, txt = model(torch.randn(2, 3, 32, 32), text.tokenize(["a red square", "a blue circle"]))
    assert img.shape == txt.shape == (2, 8)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_hf_text_tower_keeps_only_the_first_layers():
    full = build_text_tower("hf:minilm")
    one = build_text_tower("hf:minilm", layers=1)
    assert len(full.module.model.encoder.layer) == 6 and len(one.module.model.encoder.layer) == 1
    assert one.module(**one.tokenize(["a thin seven"])).shape == (1, one.width)


@pytest.mark.parametrize("spec, named", [("timm:resnet5000", "resnet50"), ("open_clip:ViT-Q-99", "ViT-Q-99"),
                                         ("resnet50", "timm:NAME")])
def test_unknown_image_tower_is_an_input_error_with_a_hint(spec, named):
    with pytest.raises(InputError, match=named):
        build_image_tower(spec)


def test_hub_weights_not_on_disk_fail_at_once_instead_of_waiting():
    started = time.perf_counter()
    with pytest.raises(InputError, match="not on disk"):
        build_text_tower("hf:clipsearch-test/no-such-model")
    assert time.perf_counter() - started < 5


def test_missing_weights_file_is_named():
    with pytest.raises(InputError, match="nowhere.pt"):
        build_image_tower("timm:test_resnet", weights="/nowhere.pt")


def quick_model_config(**changes):
    from clipsearch.config import ModelConfig

    return ModelConfig(image_tower="timm:test_resnet", text_tower="hf:minilm", text_layers=1, embed_dim=16, **changes)


def test_a_frozen_token_table_is_left_out_of_the_optimizer_and_of_saved_weights():
    from clipsearch.models import build_dual_encoder, trainable_state
    from clipsearch.optim import build_optimizer

    model, _ = build_dual_encoder(quick_model_config(freeze_text="token_embeddings"), 16)
    table = model.text_tower.model.get_input_embeddings().weight
    optimized = {id(p) for g in build_optimizer(model, "adamw", 1e-3, 0.01).param_groups for p in g["params"]}
    saved = trainable_state(model)
    assert not table.requires_grad and id(table) not in optimized
    assert "text_tower.model.embeddings.word_embeddings.weight" not in saved
    assert "text_proj.weight" in saved and "text_tower.model.embeddings.position_embeddings.weight" in saved


def test_the_token_table_trains_unless_frozen():
    from clipsearch.models import build_dual_encoder, trainable_state

    model, _ = build_dual_encoder(quick_model_config(), 16)
    assert model.text_tower.model.get_input_embeddings().weight.requires_grad
    assert set(trainable_state(model)) == set(model.state_dict())


def test_saved_trainable_weights_load_into_a_model_built_from_the_same_config():
    from clipsearch.models import build_dual_encoder, load_trainable_state, trainable_state

    cfg = quick_model_config(freeze_text="token_embeddings")
    torch.manual_seed(0)
    trained, _ = build_dual_encoder(cfg, 16)
    torch.manual_seed(1)
    fresh, _ = build_dual_encoder(cfg, 16)
    load_trainable_state(fresh, trainable_state(trained))
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    incomplete = {k: v for k, v in trainable_state(trained).items() if k != "text_proj.weight"}
    with pytest.raises(ValueError, match="text_proj.weight"):
        load_trainable_state(fresh, incomplete)
