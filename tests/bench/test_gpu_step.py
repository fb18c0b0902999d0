"""bench gpu: seed 001's model step, its FLOPs counted, on the CPU at a tiny size (the GPU figures
need a GPU; the code path is the same)."""

import json

import pytest

from clipsearch.bench.gpu_step import peak_bf16, run_gpu_step_benchmark


def test_the_step_runs_and_its_flops_are_those_of_resnet50_plus_distilbert(tmp_path):
    result = run_gpu_step_benchmark(batch=2, steps=1, precision="fp32", device="cpu", size=64, out_dir=tmp_path)
    # forward per pair: ResNet-50 at 64 px ~0.67 GFLOP + DistilBERT over 32 tokens ~2.8 GFLOP;
    # backward about twice the forward: ~10 GFLOP per pair, 20 for the batch of 2
    assert 10e9 < result["flops_per_step"] < 40e9
    assert result["samples_per_s"] > 0 and result["share_of_peak"] is None  # no peak known for a CPU
    saved = json.loads((tmp_path / "gpu.json").read_text())
    assert saved["setting"]["batch_size"] == 2
    assert "seed 001 model step" in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("name, peak", [("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                        ("Some Future GPU", None), (None, None)])
def test_peak_by_device_name(name, peak):
    assert peak_bf16(name) == peak
