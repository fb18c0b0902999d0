"""Top-10 retrieval over a large gallery: clipsearch's search (faiss exact inner product, queries
in chunks) against a plain torch matmul + topk over the whole score matrix, and against the
same torch code in chunks.

Each variant runs in a fresh process, so its peak memory (ru_maxrss) is its own; the variants
alternate round by round so that load on a shared machine hits them alike. Embeddings are
seeded random unit vectors: the cost of the search does not depend on what they mean. Every
variant's top-10 is compared with faiss's (the share of identical lists).
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import statistics
import time
from pathlib import Path

from .common import environment, write_result

VARIANTS = ("faiss_chunked", "torch_full", "torch_chunked")
CHUNK = 1024


def _embeddings(queries: int, gallery: int, dim: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    g = torch.nn.functional.normalize(torch.randn(gallery, dim, generator=generator), dim=1)
    q = torch.nn.functional.normalize(torch.randn(queries, dim, generator=generator), dim=1)
    return q, g


def _search(variant: str, q, g, k: int):
    import torch

    from ..knn import knn_search

    if variant == "faiss_chunked":
        return knn_search(q, g, k, chunk_size=CHUNK)[1]
    if variant == "torch_full":
        return (q @ g.T).topk(k, dim=1).indices  # the whole (Q, G) score matrix at once
    return torch.cat([(q[i:i + CHUNK] @ g.T).topk(k, dim=1).indices for i in range(0, len(q), CHUNK)])


def _child(variant: str, queries: int, gallery: int, dim: int, k: int, threads: int, out) -> None:
    import torch

    from ..knn import knn_search

    torch.set_num_threads(threads)
    q, g = _embeddings(queries, gallery, dim)
    knn_search(q[:8], g[:1000], k)  # faiss's first call starts its thread pool: not the search's cost
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    top = _search(variant, q, g, k)
    seconds = time.perf_counter() - started
    # the peak above what the process held with its embeddings loaded: the search's own memory
    peak_extra_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    same = float((top[:256] == knn_search(q[:256], g, k)[1]).all(dim=1).float().mean())
    out.send({"seconds": seconds, "peak_extra_mb": peak_extra_mb, "same_top10_share": same})


def _run_one(variant: str, **kwargs) -> dict:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(variant,), kwargs={**kwargs, "out": send})
    process.start()
    result = receive.recv()
    process.join()
    return result


def run_eval_benchmark(queries: int = 2000, gallery: int = 100_000, dim: int = 512, k: int = 10,
                       rounds: int = 3, threads: int = 2, out_dir: Path = Path("results/benchmarks")) -> dict:
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            runs[variant].append(_run_one(variant, queries=queries, gallery=gallery, dim=dim, k=k, threads=threads))
    summary = {v: _summary(runs[v]) for v in VARIANTS}
    base = summary["torch_full"]
    for v in VARIANTS:
        summary[v]["speedup_vs_torch_full"] = base["median_seconds"] / summary[v]["median_seconds"]
        summary[v]["memory_vs_torch_full"] = summary[v]["peak_extra_mb"] / max(base["peak_extra_mb"], 1e-9)
    result = {"benchmark": "eval", "environment": environment(),
              "command": f"clipsearch bench eval --queries {queries} --gallery {gallery} --dim {dim} --rounds {rounds}",
              "setting": {"queries": queries, "gallery": gallery, "dim": dim, "k": k, "chunk": CHUNK,
                          "rounds": rounds, "threads": threads,
                          "score_matrix_mb": queries * gallery * 4 / 2**20},
              "variants": summary, "runs": runs}
    rows = [(v, f"{s['median_seconds']:.2f} ({s['min_seconds']:.2f}-{s['max_seconds']:.2f})",
             f"{s['speedup_vs_torch_full']:.2f}x", f"{s['peak_extra_mb']:.0f}", f"{s['same_top10_share']:.3f}")
            for v, s in summary.items()]
    write_result(out_dir, "eval", result, rows,
                 ("variant", "seconds, median (min-max)", "speed vs torch_full", "peak extra MB", "same top-10 as faiss"))
    print(json.dumps({v: {k: round(x, 3) for k, x in s.items()} for v, s in summary.items()}))
    return result


def _summary(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    return {"median_seconds": statistics.median(seconds), "min_seconds": min(seconds), "max_seconds": max(seconds),
            "peak_extra_mb": max(r["peak_extra_mb"] for r in runs),
            "same_top10_share": min(r["same_top10_share"] for r in runs)}
