"""results/benchmarks/README.md: one table built from the benchmarks' JSON files."""

import json

from clipsearch.bench.summary import build_index

ENV = {"date": "2026-12-01 10:00:00 UTC", "machine": "x86_64", "cpu_count": 2, "cuda": None, "torch": "2.14.1"}


def _write(folder, name, data):
    (folder / f"{name}.json").write_text(json.dumps({"environment": ENV, "command": f"clipsearch bench {name}", **data}))


def _row(text, start):
    return next(line for line in text.splitlines() if line.startswith(start))


def test_figures_sit_beside_their_anchors_with_the_ratio(tmp_path):
    _write(tmp_path, "eval", {"setting": {"queries": 2000, "k": 10, "gallery": 100000}, "variants": {
        "faiss_chunked": {"median_seconds": 10.0, "peak_extra_mb": 150.0},
        "torch_full": {"median_seconds": 5.0, "peak_extra_mb": 600.0}}})
    _write(tmp_path, "tune", {"setup": {"trials": 4}, "median_seconds": {
        "in_process": 20.0, "tune_reuse_actors": 40.0, "tune_fresh_actors": 80.0}})
    text = build_index(tmp_path)
    # clipsearch behind on speed (0.5x), ahead on memory (4x)
    assert "| 10.00 | torch matmul + topk, whole matrix | 5.00 | 0.50x |" in _row(text, "| [eval](eval.md) | retrieval 2,000")
    assert "| 150 | torch matmul + topk, whole matrix | 600 | 4.00x |" in _row(text, "| [eval](eval.md) | retrieval, peak")
    assert "| 10.0 | in-process train() loop | 5.0 | 0.50x |" in _row(text, "| [tune](tune.md) | platform: s per trial, Ray Tune reuse")
    assert "2026-12-01, x86_64 x2 (CPU only), torch 2.14.1" in text and "`clipsearch bench eval`" in text


def test_a_benchmark_without_its_file_is_listed_as_not_measured(tmp_path):
    _write(tmp_path, "search", {"protocol": {"total": {"best": 19.8, "epochs_spent": 18.0, "best_over_grid_best": 0.99,
                                                       "epoch_share_of_grid": 0.25, "goal_met": True}},
                                "grid": {"best": 20.0, "epochs_spent": 72.0}})
    text = build_index(tmp_path)
    assert "| train | not measured |" in text and "| eval | not measured |" in text
    assert "| 18.0 | exhaustive grid, same space | 72.0 | 4.00x |" in _row(text, "| [search](search.md) | search: epochs")
    assert "| met |" in _row(text, "| [search](search.md) | search: goal")
