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


def test_channels_last_keeps_the_tower_and_its_images_in_nhwc_and_gives_the_same_embeddings():
    from clipsearch.models import build_dual_encoder

    torch.manual_seed(0)
    model, _ = build_dual_encoder(quick_model_config(), 16)
    model.eval()
    images = torch.randn(4, 3, 28, 28)
    seen = []
    model.image_tower.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    before = model.encode_image(images)
    model.use_channels_last()
    after = model.encode_image(images)
    conv = next(m for m in model.image_tower.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert not seen[0].is_contiguous(memory_format=torch.channels_last)
    assert seen[1].is_contiguous(memory_format=torch.channels_last) and not seen[1].is_contiguous()
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["clip", "supcon"])  # the image-text task and the image-only one
@pytest.mark.parametrize("on", [True, False])
def test_train_channels_last_decides_the_layout_of_each_tasks_model(loss, on):
    from clipsearch.config import load_config
    from clipsearch.train import build_run

    cfg = load_config(None, [f"loss.name={loss}", f"train.channels_last={str(on).lower()}", "data.fraction=0.1",
                       "image.images_per_class=4"], quick=True)
    model = build_run(cfg).model
    conv = next(m for m in model.image_tower.modules() if isinstance(m, torch.nn.Conv2d))
    assert model.channels_last is on
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is on


# ------------------------------------------------------------------------------ preprocessing

def test_each_tower_is_normalised_with_its_own_librarys_statistics(tiny_open_clip):
    import open_clip

    from clipsearch.models import build_dual_encoder, image_preprocess

    clip_tower, _ = build_image_tower(f"open_clip:{tiny_open_clip}")
    clip = image_preprocess(clip_tower)
    assert clip.mean == open_clip.OPENAI_DATASET_MEAN and clip.std == open_clip.OPENAI_DATASET_STD
    assert (clip.size, clip.fixed_size, clip.interpolation) == (32, True, "bicubic")
    timm_tower, _ = build_image_tower("timm:test_resnet")
    own = image_preprocess(timm_tower)  # timm's record for test_resnet.r160_in1k
    assert (own.mean, own.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert (own.size, own.fixed_size, own.interpolation) == (160, False, "bilinear")
    model, _ = build_dual_encoder(quick_model_config(), 16)
    assert model.image_preprocess == own


# ------------------------------------------------------------------------------ weights by name

@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty HF hub cache (and torch hub folder) for this test; put(repo, file, save) fills it
    in the hub's own layout, as `hf download` would."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def put(repo_id: str, filename: str, save) -> None:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        commit = "0" * 40
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
        save(repo / "snapshots" / commit / filename)

    return put


@pytest.mark.parametrize("spec, weights, download", [
    ("open_clip:ViT-B-32", "laion2b_s34b_b79k", "hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K"),
    ("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None, "hf download laion/CLIP-ViT-B-32"),
    ("timm:resnet50.a1_in1k", "pretrained", "hf download timm/resnet50.a1_in1k"),
])
def test_named_weights_not_in_the_cache_fail_at_once_saying_how_to_download(hub_cache, spec, weights, download):
    started = time.perf_counter()
    with pytest.raises(InputError, match="not in the local cache") as error:
        build_image_tower(spec, weights)
    assert time.perf_counter() - started < 5
    assert download in str(error.value) and error.value.where in ("model.image_weights", "model.image_tower")


def test_an_unknown_open_clip_tag_names_the_known_ones(tiny_open_clip):
    with pytest.raises(InputError, match="laion2b_s34b_b79k"):
        build_image_tower("open_clip:ViT-B-32", "laion2b_s34b_b79")


def test_an_open_clip_tag_in_the_local_cache_loads_offline_with_its_preprocessing(tiny_open_clip, hub_cache,
                                                                                   monkeypatch):
    import open_clip

    from clipsearch.models import image_preprocess

    tag = {"hf_hub": "clipsearch-test/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
           "interpolation": "bicubic", "resize_mode": "shortest"}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, tiny_open_clip, {"cached": tag})
    torch.manual_seed(3)
    saved = open_clip.create_model(tiny_open_clip)
    hub_cache("clipsearch-test/tiny-clip", "open_clip_pytorch_model.bin", lambda p: torch.save(saved.state_dict(), p))
    tower, _ = build_image_tower(f"open_clip:{tiny_open_clip}", "cached")
    text = build_text_tower(f"open_clip:{tiny_open_clip}", "cached")
    for name, value in saved.visual.state_dict().items():
        assert torch.equal(tower.state_dict()[name], value), name
    assert torch.equal(text.module.model.token_embedding.weight, saved.token_embedding.weight)
    assert (image_preprocess(tower).mean, image_preprocess(tower).std) == (tag["mean"], tag["std"])


def test_an_open_clip_hub_repo_in_the_local_cache_loads_offline(tiny_open_clip, hub_cache):
    import open_clip

    from clipsearch.models import image_preprocess

    torch.manual_seed(4)
    saved = open_clip.create_model(tiny_open_clip)
    config = {"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}}
    hub_cache("clipsearch-test/tiny-hub", "open_clip_config.json", lambda p: p.write_text(json.dumps(config)))
    hub_cache("clipsearch-test/tiny-hub", "open_clip_pytorch_model.bin", lambda p: torch.save(saved.state_dict(), p))
    tower, _ = build_image_tower("open_clip:hf-hub:clipsearch-test/tiny-hub")
    text = build_text_tower("open_clip:hf-hub:clipsearch-test/tiny-hub")
    assert torch.equal(tower.conv1.weight, saved.visual.conv1.weight)
    assert image_preprocess(tower).mean == (0.1, 0.2, 0.3) and image_preprocess(tower).std == (0.4, 0.5, 0.6)
    assert text.tokenize(["a red square"])["input_ids"].shape == (1, 16)


def test_timm_pretrained_weights_in_the_local_cache_load_offline(hub_cache):
    import timm

    torch.manual_seed(5)
    saved = timm.create_model("test_resnet")  # with its classifier, as the hub's copy
    hub_cache("timm/test_resnet.r160_in1k", "pytorch_model.bin", lambda p: torch.save(saved.state_dict(), p))
    tower, _ = build_image_tower("timm:test_resnet", "pretrained")
    for name, value in tower.state_dict().items():
        assert torch.equal(value, saved.state_dict()[name]), name
