"""Exact k-nearest-neighbour search by inner product (faiss), and kNN classification.

Scores are inner products: pass L2-normalised embeddings to rank by cosine similarity.
The search is exact (`IndexFlatIP`), on a GPU when the installed faiss has one, else on the
CPU; queries go through in chunks so memory stays bounded on large galleries.

faiss is an optional dependency: `pip install 'clipsearch[cpu]'` (or `[cuda]` on a GPU machine).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

DEFAULT_CHUNK_SIZE = 1024

# faiss's GPU flat index selects at most this many neighbours per query (GPU_MAX_SELECTION_K);
# deeper searches run on the CPU index, which has no such limit.
GPU_MAX_K = 2048

# Database rows per BLAS call of faiss's CPU flat search. faiss's default, 1,024, keeps each
# sgemm small, and with it faiss lost to a plain torch matmul + topk by 1.5x on 2 cores
# (`clipsearch bench eval`, 2,000 queries x 100k x 512-d); at 16,384 it is faster than torch.
# The scratch this costs is chunk_size x 16,384 floats: 64 MB at the default chunk of 1,024.
CPU_DATABASE_BLOCK = 16384


def knn_search(
    queries: torch.Tensor, keys: torch.Tensor, k: int, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k keys with the largest inner product with each query, best first.

    queries (Q, d), keys (K, d): float embeddings (searched in float32).
    k: neighbours per query, capped at K.
    chunk_size: queries searched per call to faiss.
    Returns (scores (Q, min(k, K)) float32, indices (Q, min(k, K)) long), on the queries' device,
    each row sorted by decreasing score. The order among equal scores is faiss's; metrics that
    must not profit from ties re-order them (see `clipsearch.metrics`).
    """
    _check_embeddings(queries, keys, "queries", "keys")
    if k < 1:
        raise ValueError(f"knn_search: k must be >= 1, got {k}")
    if chunk_size < 1:
        raise ValueError(f"knn_search: chunk_size must be >= 1, got {chunk_size}")
    k = min(k, keys.shape[0])
    index = _flat_ip_index(_as_faiss_array(keys), k, queries.device)
    scores = [torch.empty(0, k)]
    indices = [torch.empty(0, k, dtype=torch.long)]
    for start in range(0, queries.shape[0], chunk_size):
        s, i = index.search(_as_faiss_array(queries[start : start + chunk_size]), k)
        scores.append(torch.from_numpy(s))
        indices.append(torch.from_numpy(i))
    return torch.cat(scores).to(queries.device), torch.cat(indices).to(queries.device)


def knn_classify(
    train_emb: torch.Tensor,
    train_labels: torch.Tensor,
    test_emb: torch.Tensor,
    k: int = 20,
    weighted: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Label of each test embedding by a vote of its k nearest training embeddings.

    train_emb (N, d), train_labels (N,) int in [0, C), test_emb (Q, d).
    weighted: each neighbour votes with its score clamped at 0 (its cosine similarity for
    normalised embeddings) instead of 1.
    A tie in the vote goes to the class of the nearer neighbour, so the result does not depend
    on class numbering.
    Returns predicted labels (Q,) long, on the test embeddings' device.
    """
    if train_labels.shape != (train_emb.shape[0],) or train_labels.dtype.is_floating_point:
        raise ValueError(
            f"knn_classify: train_labels must be integer class indices of shape "
            f"({train_emb.shape[0]},), one per training embedding; got {train_labels.dtype} "
            f"{tuple(train_labels.shape)}"
        )
    if train_labels.numel() and train_labels.min() < 0:
        raise ValueError("knn_classify: train_labels must be class indices >= 0")
    scores, neighbours = knn_search(test_emb, train_emb, k, chunk_size)
    neighbour_labels = train_labels.long().to(neighbours.device)[neighbours]  # (Q, k)
    num_classes = int(train_labels.max()) + 1
    weights = scores.clamp(min=0) if weighted else torch.ones_like(scores)
    votes = torch.zeros(scores.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, neighbour_labels, weights)
    width = neighbours.shape[1]
    rank = torch.arange(width, device=neighbours.device).expand_as(neighbours)
    nearest = torch.full_like(votes, width, dtype=torch.long)
    nearest.scatter_reduce_(1, neighbour_labels, rank, reduce="amin")
    # Among the classes with the most votes, the one with the nearest neighbour wins.
    nearest = nearest.masked_fill(votes < votes.amax(1, keepdim=True), width)
    return nearest.argmin(1)


def _check_embeddings(queries: torch.Tensor, keys: torch.Tensor, qname: str, kname: str) -> None:
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"{qname} and {kname} must be (n, d) with the same d; got {tuple(queries.shape)} "
            f"and {tuple(keys.shape)}"
        )
    if keys.shape[0] == 0:
        raise ValueError(f"{kname} is empty: there is nothing to search")
    for name, x in ((qname, queries), (kname, keys)):
        if not torch.isfinite(x).all():
            raise ValueError(
                f"{name} contain NaN or inf: the model that embedded them diverged; "
                "stop the trial before evaluating it"
            )


def _as_faiss_array(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


def _flat_ip_index(keys: np.ndarray, k: int, device: torch.device):
    faiss = _import_faiss()
    faiss.cvar.distance_compute_blas_database_bs = CPU_DATABASE_BLOCK
    index = faiss.IndexFlatIP(keys.shape[1])
    if faiss.get_num_gpus() > 0 and k <= GPU_MAX_K:
        gpu = device.index if device.type == "cuda" and device.index is not None else 0
        index = faiss.index_cpu_to_gpu(_gpu_resources(), gpu, index)
    index.add(keys)
    return index


@functools.cache
def _gpu_resources():
    # One set of GPU resources per process: creating it reserves scratch memory on the GPU.
    return _import_faiss().StandardGpuResources()


def _import_faiss():
    try:
        import faiss
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "kNN search needs faiss: pip install 'clipsearch[cpu]', or 'clipsearch[cuda]' "
            "on a CUDA machine (never both)"
        ) from e
    return faiss
