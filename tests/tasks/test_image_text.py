"""The image-text task's set-up and evaluator (clipsearch.tasks.image_text)."""

import contextlib

import torch

from clipsearch.config import load_config
from clipsearch.tasks import image_text


def test_evaluation_encodes_captions_by_length_and_gives_each_its_own_embedding():
    """The evaluator sorts captions by length and trims each chunk's padding; every caption
    must still get the embedding its own untrimmed tokens give."""
    cfg = load_config(quick=True, overrides=["eval.batch_size=64", "model.freeze_text=none"])
    setup = image_text.setup(cfg, torch.device("cpu"))
    evaluator, model = setup.evaluator, setup.model.eval()
    tokens = evaluator.text.tokens
    with torch.no_grad():
        untrimmed = torch.cat([model.encode_text({k: v[i:i + 64] for k, v in tokens.items()})
                               for i in range(0, len(tokens["input_ids"]), 64)])
        ordered = evaluator.text_embeddings(model, tokens, "captions")
    assert torch.allclose(untrimmed, ordered, atol=1e-5)


def test_a_frozen_text_tower_is_run_once_per_caption_and_gives_the_embeddings_it_would(tmp_path, monkeypatch):
    """model.freeze_text=tower: training batches and evaluation read the tower's cached output;
    the embeddings equal those of running the frozen tower, and a second setup reads the cache."""
    cfg = load_config(quick=True, overrides=["model.freeze_text=tower", f"data.cache_dir={tmp_path}",
                                             "data.fraction=0.1"])
    setup = image_text.setup(cfg, torch.device("cpu"))
    model, bank = setup.model, setup.batches.text
    assert model.text_tower_frozen and bank.features is not None
    model.train()
    assert not model.text_tower.training  # no dropout: the cache was computed in eval mode
    batch = next(iter(setup.batches.epoch(torch.Generator().manual_seed(0))))
    assert batch.tokens == {} and batch.text_features.shape[0] == len(batch.index)
    rows = torch.arange(5)
    with torch.no_grad():
        direct = model.encode_text(bank.select(rows))
    assert torch.allclose(model.encode_text_features(bank.features[rows]), direct, atol=1e-5)
    monkeypatch.setattr(image_text, "encode_texts", lambda *a, **k: (_ for _ in ()).throw(AssertionError("encoded again")))
    again = image_text.setup(cfg, torch.device("cpu"))
    assert torch.equal(again.batches.text.features, bank.features)


def test_the_default_cache_is_the_machines_so_a_trial_in_another_folder_encodes_nothing_again(tmp_path, monkeypatch):
    """Without data.cache_dir, every run of the machine shares $XDG_CACHE_HOME/clipsearch: a Ray
    trial runs in a working directory of its own, where a relative default was an empty cache
    (every trial ran the frozen tower over every caption again)."""
    monkeypatch.delenv("CLIPSEARCH_CACHE_DIR", raising=False)  # the suite's own (tests/conftest.py)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(quick=True, overrides=["model.freeze_text=tower", "data.fraction=0.1"])
    assert cfg.data.cache_dir == str(tmp_path / "xdg" / "clipsearch")
    first = image_text.setup(cfg, torch.device("cpu"))
    first.evaluator(first.model, contextlib.nullcontext())  # its captions and prompts, encoded once
    (tmp_path / "trial").mkdir()
    monkeypatch.chdir(tmp_path / "trial")
    monkeypatch.setattr(image_text, "encode_texts", lambda *a, **k: (_ for _ in ()).throw(AssertionError("encoded again")))
    again = load_config(quick=True, overrides=["model.freeze_text=tower", "data.fraction=0.1"])
    assert again.data.cache_dir == cfg.data.cache_dir
    trial = image_text.setup(again, torch.device("cpu"))
    assert trial.batches.text.features is not None
    assert trial.evaluator(trial.model, contextlib.nullcontext())["objective"] >= 0
    assert not (tmp_path / "trial" / ".cache").exists()
    monkeypatch.setenv("CLIPSEARCH_CACHE_DIR", str(tmp_path / "own"))
    assert load_config(quick=True).data.cache_dir == str(tmp_path / "own")


def test_a_run_reads_the_frozen_features_it_would_compute_whatever_run_cached_them(tmp_path):
    """The chunk size and the thread count change the features' rounding: each is its own cache
    entry, and what a run reads back is bitwise what it computed."""
    from clipsearch.models import build_dual_encoder

    cfg = load_config(quick=True, overrides=["model.freeze_text=tower"])
    model, tokenize = build_dual_encoder(cfg.model, cfg.data.max_text_length)
    tokens = tokenize([f"a {'very ' * (i % 7)}thick handwritten {i}" for i in range(300)])
    cpu = torch.device("cpu")
    by_chunk = {size: image_text.frozen_text_features(model, tokens, str(tmp_path), size, cpu) for size in (64, 512)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        image_text.frozen_text_features(model, tokens, str(tmp_path), 512, cpu)
    finally:
        torch.set_num_threads(threads)
    assert len(list(tmp_path.glob("text-features-*"))) == 3
    assert torch.equal(image_text.frozen_text_features(model, tokens, str(tmp_path), 64, cpu), by_chunk[64])
    assert torch.allclose(by_chunk[64], by_chunk[512], atol=1e-4)  # the same features, up to rounding
