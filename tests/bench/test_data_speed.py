"""bench data: every variant timed, the cache read without decoding after epoch 1, the batches checked."""

import json
import threading

import pytest
import torch

import clipsearch.data.cache as cache_module
from clipsearch.bench.data_speed import VARIANTS, break_even_epochs, check_same_images, run_data_benchmark


@pytest.fixture
def cache_decodes(monkeypatch):
    """Counts the images the decoded-image cache decodes (its threads call decode_image)."""
    calls, lock, real = [0], threading.Lock(), cache_module.decode_image

    def counting(source, image_size):
        with lock:
            calls[0] += 1
        return real(source, image_size)

    monkeypatch.setattr(cache_module, "decode_image", counting)
    return calls


def test_data_benchmark_times_every_variant_and_decodes_each_image_once_for_the_cache(tmp_path, cache_decodes):
    result = run_data_benchmark(images=40, size=32, batch=8, epochs=3, out_dir=tmp_path)
    # epoch 1 decoded the 40 files; epochs 2 and 3 (cache hits) and the final check decoded nothing
    assert cache_decodes[0] == 40
    for variant in VARIANTS:
        figures = result["variants"][variant]
        for key in ("ms_per_batch", "seconds_per_epoch", "images_per_s", "epoch_speed_vs_workers0"):
            assert figures[key] > 0, (variant, key)
        assert len(result["epochs"][variant]) == 3
        assert all(len(epoch["batch_ms"]) == 5 for epoch in result["epochs"][variant])  # 40 / 8
    cache = result["variants"]["cache"]
    assert cache["epochs_timed"] == 2 and cache["build_seconds"] > 0
    assert cache["cache_mb"] == pytest.approx(40 * 32 * 32 * 3 / 2**20, rel=0.05)
    assert [e["cache_hit"] for e in result["epochs"]["cache"]] == [False, True, True]
    assert result["variants"]["decode_workers0"]["epoch_speed_vs_workers0"] == 1.0
    saved = json.loads((tmp_path / "data.json").read_text())
    assert saved["setting"]["images"] == 40 and saved["benchmark"] == "data"
    table = (tmp_path / "data.md").read_text()
    assert "Rerun: `clipsearch bench data --images 40" in table and "Break-even" in table
    assert all(label in table for label in VARIANTS.values())


def test_the_batch_check_raises_on_any_difference():
    batch = torch.rand(4, 3, 8, 8)
    check_same_images(batch, batch.clone(), "same")
    changed = batch.clone()
    changed[2, 1, 3, 3] += 1e-6
    with pytest.raises(RuntimeError, match="differ"):
        check_same_images(batch, changed, "one pixel off")
    with pytest.raises(RuntimeError, match="shapes"):
        check_same_images(batch, batch[:3], "one image short")


@pytest.mark.parametrize("first, later, decode, expected", [
    (10.0, 1.0, 4.0, 3),    # 10 + 2 * 1 = 12 <= 3 * 4
    (3.0, 1.0, 4.0, 1),     # cheaper from the first epoch
    (10.0, 5.0, 4.0, None),  # a hit slower than decoding: never
])
def test_break_even_is_the_first_epoch_where_the_cache_has_cost_no_more(first, later, decode, expected):
    assert break_even_epochs(first, later, decode) == expected
    if expected is not None:
        assert first + (expected - 1) * later <= expected * decode
        assert expected == 1 or first + (expected - 2) * later > (expected - 1) * decode
