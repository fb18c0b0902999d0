"""bench eval: every variant finds the same top-10 as faiss, and the files are written."""

import json

from clipsearch.bench.eval_speed import VARIANTS, run_eval_benchmark


def test_eval_benchmark_agrees_across_variants_and_writes_its_table(tmp_path):
    result = run_eval_benchmark(queries=300, gallery=3000, dim=32, rounds=2, out_dir=tmp_path)
    for variant in VARIANTS:
        summary = result["variants"][variant]
        assert summary["same_top10_share"] == 1.0  # exact search: the same neighbours everywhere
        assert summary["median_seconds"] > 0 and len(result["runs"][variant]) == 2
    assert result["variants"]["torch_full"]["speedup_vs_torch_full"] == 1.0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["setting"]["gallery"] == 3000
    table = (tmp_path / "eval.md").read_text()
    assert all(v in table for v in VARIANTS) and "Rerun: `clipsearch bench eval" in table
