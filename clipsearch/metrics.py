"""Evaluation metrics: one implementation of each, used by training, search and reports.

Pure functions: torch tensors in, python floats (or dicts of them) out. Rates are percentages
(0-100); the query/gallery `score` is on its competition scale (0-1000).
Scores are inner products: pass L2-normalised embeddings to rank by cosine similarity.

The tie rule (every ranking metric here)
----------------------------------------
A candidate that scores the same as a correct one is ranked above it: ties count against the
query. The rank of a query's best correct candidate is the number of wrong candidates whose
score is >= that best correct score; Hit@k (R@k, ACC@k) holds iff that rank is < k. So a
collapsed model (every score equal) retrieves nothing, and a caption shared word for word by
two images is no free hit for either. Ranked lists follow the same rule: the position (from 0)
of the j-th correct item (j from 1) is (j - 1) + the number of wrong items scoring >= it.

"The same score" means within `tie_tol` (relative, at least `tie_tol` absolute): float32
matrix products give two identical vectors scores that differ in the last bit (measured here:
up to 1.2e-7 for cosines), and exact equality would let that rounding break ties at random.
Items that really differ seldom score within 1e-6 of each other; when they do, the near-tie
goes against the query like an exact one.

Non-finite embeddings raise a ValueError: a diverged trial should be stopped, not scored.

References: Radford et al. 2021 (CLIP: retrieval R@k, zero-shot prompt ensembles);
Musgrave et al. 2020, "A Metric Learning Reality Check" (MAP@R).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .knn import DEFAULT_CHUNK_SIZE, _check_embeddings, knn_classify, knn_search

__all__ = [
    "TIE_TOL",
    "chance_levels",
    "confusion_matrix",
    "knn_accuracy",
    "knn_classify",
    "knn_search",
    "objective",
    "query_gallery_metrics",
    "ranking_metrics",
    "retrieval_metrics",
    "submission",
    "topk_accuracy",
    "zeroshot_classifier",
]

TIE_TOL = 1e-6

# The query/gallery score of seed 000: weights of Hit@1, Hit@5, Hit@10 (as fractions).
SCORE_WEIGHTS = {1: 600.0, 5: 300.0, 10: 100.0}


# --- image-text retrieval ---------------------------------------------------------------------


def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    tie_tol: float = TIE_TOL,
) -> dict[str, float]:
    """Image-to-text (TR@k) and text-to-image (IR@k) recall with several captions per image.

    image_emb (N, d), text_emb (M, d); text_to_image (M,) long: the image of each caption, in
    [0, N); every image needs at least one caption.
    TR@k: % of images with any of their captions among the top k texts. An image's rank is the
    number of captions of other images scoring >= its best own caption (ties count against it).
    IR@k: % of captions whose image is among the top k images. A caption's rank is the number
    of other images scoring >= its own image.
    chunk_size: queries scored at a time: one (chunk_size, N or M) score matrix, and a boolean
      one, are held at once.
    Returns {"tr@k", "ir@k" for k in ks, "r_mean": mean of them all}, in %.
    """
    _check_embeddings(image_emb, text_emb, "image_emb", "text_emb")
    ks = _check_ks(ks)
    num_images, num_texts = image_emb.shape[0], text_emb.shape[0]
    text_to_image = _check_labels(text_to_image, num_texts, "text_to_image", num_images)
    captions = torch.bincount(text_to_image.cpu(), minlength=num_images)
    if (captions == 0).any():
        missing = torch.nonzero(captions == 0).flatten()
        raise ValueError(
            f"retrieval_metrics: {len(missing)} images have no caption in text_to_image (first: "
            f"{missing[:5].tolist()}); drop them from image_emb or add their captions"
        )
    images, texts = _score_dtype(image_emb), _score_dtype(text_emb)
    text_to_image = text_to_image.to(images.device)
    # Captions grouped by image: those of images [a, b) are by_image[first[a]:first[b]].
    by_image = torch.argsort(text_to_image, stable=True)
    first = torch.cat([captions.new_zeros(1), captions.cumsum(0)]).tolist()

    def own_captions(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        cols = by_image[first[a] : first[b]]
        return text_to_image[cols] - a, cols

    def own_image(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.arange(b - a, device=images.device), text_to_image[a:b]

    tr_rank = _best_positive_ranks(images, texts, own_captions, chunk_size, tie_tol)
    ir_rank = _best_positive_ranks(texts, images, own_image, chunk_size, tie_tol)
    metrics = {f"tr@{k}": _percent(tr_rank < k) for k in ks}
    metrics |= {f"ir@{k}": _percent(ir_rank < k) for k in ks}
    metrics["r_mean"] = sum(metrics.values()) / len(metrics)
    return metrics


def _best_positive_ranks(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    positives: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]],
    chunk_size: int,
    tie_tol: float,
) -> torch.Tensor:
    """(Q,) pessimistic rank of each query's best positive, scoring chunk_size queries at a time.

    positives(a, b) -> (rows, cols): the positive (query a + row, candidate col) pairs of the
    queries [a, b), every query with at least one.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    ranks = []
    for a in range(0, queries.shape[0], chunk_size):
        b = min(a + chunk_size, queries.shape[0])
        ranks.append(_pessimistic_rank(queries[a:b] @ candidates.T, *positives(a, b), tie_tol))
    return torch.cat(ranks)


def _pessimistic_rank(scores: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, tie_tol: float) -> torch.Tensor:
    """(B,) long: number of negatives scoring >= the row's best positive (within tie_tol).

    scores (B, K); the positives are the entries scores[rows, cols], at least one per row.
    Positives are given as pairs, not a (B, K) mask, to keep one (B, K) temporary.
    """
    positive_scores = scores[rows, cols]
    best = torch.full_like(scores[:, 0], float("-inf")).scatter_reduce(0, rows, positive_scores, "amax")
    threshold = best - tie_tol * best.abs().clamp(min=1.0)
    # int32 sums of a bool matrix run twice as fast as the default int64 on the CPU.
    at_or_above = (scores >= threshold[:, None]).sum(1, dtype=torch.int32).long()
    positives_at_or_above = torch.zeros_like(at_or_above).index_add_(
        0, rows, (positive_scores >= threshold[rows]).long()
    )
    return at_or_above - positives_at_or_above


# --- zero-shot classification -----------------------------------------------------------------


def zeroshot_classifier(class_text_emb: torch.Tensor) -> torch.Tensor:
    """Class vectors for zero-shot classification from prompt-template embeddings (CLIP).

    class_text_emb (C, P, d): text embedding of each class name in each of P prompt templates.
    Returns (C, d): per class, the re-normalised mean of the L2-normalised embeddings.
    Score images with image_emb @ classifier.T and pass that to `topk_accuracy`.
    """
    if class_text_emb.ndim != 3:
        raise ValueError(
            "zeroshot_classifier: class_text_emb must be (classes, templates, d), got shape "
            f"{tuple(class_text_emb.shape)}; stack one (templates, d) block per class"
        )
    return F.normalize(F.normalize(class_text_emb, dim=-1).mean(1), dim=-1)


def topk_accuracy(
    scores: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5), tie_tol: float = TIE_TOL
) -> dict[str, float]:
    """% of samples whose true class is among the k best-scoring classes.

    scores (N, C): logits or similarities; labels (N,) long in [0, C).
    A wrong class scoring the same as the true class ranks above it; with k >= C every sample
    counts as correct.
    Returns {"acc@k" for k in ks}, in %.
    """
    if scores.ndim != 2:
        raise ValueError(f"topk_accuracy: scores must be (samples, classes), got {tuple(scores.shape)}")
    ks = _check_ks(ks)
    labels = _check_labels(labels, scores.shape[0], "labels", scores.shape[1]).to(scores.device)
    if not torch.isfinite(scores).all():
        raise ValueError("topk_accuracy: scores contain NaN or inf; the model diverged")
    rows = torch.arange(len(labels), device=scores.device)
    rank = _pessimistic_rank(_score_dtype(scores), rows, labels, tie_tol)
    return {f"acc@{k}": _percent(rank < k) for k in ks}


def objective(metrics: Mapping[str, float]) -> float:
    """The search objective of the three-phase CLIP search: (TR@1 + IR@1 + ACC@1) / 3, in %."""
    missing = [key for key in ("tr@1", "ir@1", "acc@1") if key not in metrics]
    if missing:
        raise ValueError(
            f"objective needs {missing}, which are not among {sorted(metrics)}; evaluate "
            "retrieval_metrics and topk_accuracy with k = 1 first"
        )
    return (metrics["tr@1"] + metrics["ir@1"] + metrics["acc@1"]) / 3


def chance_levels(captions_per_image: Sequence[int], num_classes: int) -> dict[str, float]:
    """What a model that ranks at random scores, in %, on a retrieval set whose images have
    `captions_per_image` captions and a zero-shot set of `num_classes` classes: TR@1 = the mean
    share of all captions that are an image's own, IR@1 = 1 / images, ACC@1 = 1 / classes, and
    the objective of those (the embedded default: 0.1, 0.1, 10 and 3.4)."""
    counts = [float(c) for c in captions_per_image]
    total = sum(counts)
    out = {"tr1": 100.0 * sum(c / total for c in counts) / len(counts) if total else 0.0,
           "ir1": 100.0 / max(len(counts), 1), "acc1": 100.0 / max(num_classes, 1)}
    out["objective"] = (out["tr1"] + out["ir1"] + out["acc1"]) / 3
    return out


# --- kNN classification -----------------------------------------------------------------------


def knn_accuracy(
    train_emb: torch.Tensor,
    train_labels: torch.Tensor,
    test_emb: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    weighted: bool = False,
) -> float:
    """% of test embeddings whose kNN vote (`knn_classify`) gives their label."""
    test_labels = _check_labels(test_labels, test_emb.shape[0], "test_labels")
    predicted = knn_classify(train_emb, train_labels, test_emb, k=k, weighted=weighted)
    return _percent(predicted.cpu() == test_labels.cpu())


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) long counts: row = true class, column = predicted class.

    pred (N,), labels (N,): class indices in [0, num_classes).
    """
    labels = _check_labels(labels, labels.shape[0], "labels", num_classes)
    pred = _check_labels(pred, labels.shape[0], "pred", num_classes).to(labels.device)
    cells = torch.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)
    return cells.reshape(num_classes, num_classes)


# --- query/gallery retrieval (seed 000) -------------------------------------------------------


def query_gallery_metrics(
    query_emb: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_emb: torch.Tensor,
    gallery_labels: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    tie_tol: float = TIE_TOL,
) -> dict[str, float]:
    """Rank the gallery for each query with `knn_search`, then score it as `ranking_metrics`.

    query_emb (Q, d), query_labels (Q,) long, gallery_emb (G, d), gallery_labels (G,) long.
    The search goes as deep as the metrics need (max(ks, 10, largest R)). Where a tie crosses
    that depth, that query's whole gallery is scored and sorted (chunk_size queries at a time),
    so ties count against the query exactly as the module's rule says, whatever order faiss
    gave them. Works on the embeddings' device.
    """
    _check_embeddings(query_emb, gallery_emb, "query_emb", "gallery_emb")
    ks = _check_ks(ks)
    device, gallery_size = query_emb.device, gallery_emb.shape[0]
    query_labels = _check_labels(query_labels, query_emb.shape[0], "query_labels").to(device)
    gallery_labels = _check_labels(gallery_labels, gallery_size, "gallery_labels").to(device)
    relevant = _relevant_counts(query_labels, gallery_labels)
    depth = min(gallery_size, max(*ks, *SCORE_WEIGHTS, int(relevant.max())))

    # One item past the depth shows whether a tie runs on into the part faiss did not return.
    scores, ranking = knn_search(query_emb, gallery_emb, depth + 1, chunk_size)
    correct = gallery_labels[ranking] == query_labels[:, None]
    positions = _correct_positions(scores, correct, tie_tol, width=depth + 1)
    if depth < gallery_size:
        last = scores[:, depth - 1]
        crossing = torch.nonzero(scores[:, depth] >= last - tie_tol * last.abs().clamp(min=1.0)).flatten()
        for rows in crossing.split(chunk_size) if len(crossing) else ():
            full_scores = _score_dtype(query_emb[rows]) @ _score_dtype(gallery_emb).T
            full_scores, order = full_scores.sort(1, descending=True)
            correct = gallery_labels[order] == query_labels[rows, None]
            positions[rows] = _correct_positions(full_scores, correct, tie_tol, width=depth + 1)
    return _metrics_from_positions(positions, relevant, ks, gallery_size)


def ranking_metrics(
    ranking: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    scores: torch.Tensor | None = None,
    tie_tol: float = TIE_TOL,
) -> dict[str, float]:
    """Query/gallery retrieval metrics of a ranking (seed 000), all in % except `score`.

    ranking (Q, L) long: gallery indices per query, best first (e.g. a submission's top 10).
    query_labels (Q,), gallery_labels (G,) long: identities; a gallery item is correct for a
    query when their labels agree. R = number of correct gallery items of a query.
    scores (Q, L), optional: the ranking's scores, non-increasing per row. Given, ties inside the
    list count against the query (the module's rule); without, the list is taken as it is.
    Items past the end of the list count as not retrieved.

    accuracy@1: % of queries whose first item is correct (= hit@1).
    precision@k: mean over queries of the share of correct items in the top k; with k larger
      than the gallery the share is of min(k, G) items, so a perfect ranking scores 100.
    hit@k: % of queries with at least one correct item in the top k.
    map@r: mean over queries with R >= 1 of AP@R = (1/R) sum_{i<=R} P@i * correct_i
      (Musgrave et al. 2020); 0 when no query has R >= 1.
    score: 600 hit@1 + 300 hit@5 + 100 hit@10 with hits as fractions (max 1000).
    queries, queries_without_match: counts; a query without match (R = 0) is a miss in every
      rate and is left out of map@r only.
    """
    if ranking.ndim != 2 or ranking.shape[1] == 0:
        raise ValueError(f"ranking must be (queries, depth >= 1), got {tuple(ranking.shape)}")
    ks = _check_ks(ks)
    gallery_size = gallery_labels.shape[0]
    ranking = _check_labels(ranking, ranking.shape[0], "ranking", gallery_size, ndim=2).cpu()
    query_labels = _check_labels(query_labels, ranking.shape[0], "query_labels").cpu()
    gallery_labels = _check_labels(gallery_labels, gallery_size, "gallery_labels").cpu()
    if scores is not None:
        if scores.shape != ranking.shape:
            raise ValueError(f"scores {tuple(scores.shape)} must match ranking {tuple(ranking.shape)}")
        scores = _score_dtype(scores.cpu())
        if (scores[:, 1:] > scores[:, :-1]).any():
            raise ValueError("scores must be non-increasing along each row (best first, as knn_search gives)")
    correct = gallery_labels[ranking] == query_labels[:, None]
    positions = _correct_positions(scores, correct, tie_tol, width=ranking.shape[1])
    return _metrics_from_positions(positions, _relevant_counts(query_labels, gallery_labels), ks, gallery_size)


def submission(
    query_names: Sequence[str], gallery_names: Sequence[str], ranking: torch.Tensor, top: int = 10
) -> dict[str, list[str]]:
    """{query file: [top gallery files, best first]} from a ranking (Q, L) of gallery indices.

    Lists are min(top, G) long; the ranking must be at least that deep.
    """
    depth = min(top, len(gallery_names))
    if ranking.ndim != 2 or ranking.shape[0] != len(query_names) or ranking.shape[1] < depth:
        raise ValueError(
            f"submission: ranking {tuple(ranking.shape)} must be ({len(query_names)} queries, "
            f">= {depth}); search with k >= top"
        )
    if len(set(query_names)) != len(query_names):
        raise ValueError("submission: query_names has duplicates; each query file must appear once")
    rows = _check_labels(ranking[:, :depth], len(query_names), "ranking", len(gallery_names), ndim=2).tolist()
    return {query: [gallery_names[i] for i in row] for query, row in zip(query_names, rows)}


def _correct_positions(
    scores: torch.Tensor | None, correct: torch.Tensor, tie_tol: float, width: int
) -> torch.Tensor:
    """(Q, width) float64: positions (from 0) of the first `width` correct items, ascending,
    inf where a row has fewer.

    correct (Q, L) bool: whether each listed item is correct; scores (Q, L) non-increasing, or
    None to take positions as listed. With scores, the j-th correct item (j from 1) sits at
    (j - 1) + the number of wrong listed items scoring >= it (within tie_tol): ties count
    against the query.
    """
    length = correct.shape[1]
    width = min(width, length)
    slot = torch.arange(length, device=correct.device).expand_as(correct)
    slot = torch.where(correct, slot, length).topk(width, dim=1, largest=False).values
    found = slot < length
    if scores is None:
        positions = slot
    else:
        # Items scoring >= s - tol form a prefix of a row sorted best first: its length, less
        # the correct items within it, is the number of wrong items at or above s.
        s = scores.gather(1, slot.clamp(max=length - 1))
        threshold = s - tie_tol * s.abs().clamp(min=1.0)
        prefix = length - torch.searchsorted(scores.flip(1).contiguous(), threshold.contiguous())
        correct_within = torch.cumsum(correct, 1).gather(1, prefix - 1)
        positions = torch.arange(width, device=correct.device) + prefix - correct_within
    return positions.double().masked_fill(~found, float("inf"))


def _metrics_from_positions(
    positions: torch.Tensor, relevant: torch.Tensor, ks: tuple[int, ...], gallery_size: int
) -> dict[str, float]:
    """The ranking_metrics dict from positions (Q, L) of correct items and R (Q,)."""
    hit = {k: positions[:, 0] < k for k in {*ks, *SCORE_WEIGHTS}}
    metrics = {"accuracy@1": _percent(hit[1])}
    for k in ks:
        retrieved = (positions < k).sum(1)
        metrics[f"precision@{k}"] = _percent(retrieved.double() / min(k, gallery_size))
    metrics |= {f"hit@{k}": _percent(hit[k]) for k in ks}

    matched = relevant > 0
    rank_among_correct = torch.arange(1, positions.shape[1] + 1, dtype=torch.float64, device=positions.device)
    precision_at_hits = torch.where(positions < relevant[:, None], rank_among_correct / (positions + 1), 0.0)
    average_precision = precision_at_hits.sum(1) / relevant.clamp(min=1)
    metrics["map@r"] = _percent(average_precision[matched]) if matched.any() else 0.0
    metrics["score"] = sum(w * hit[k].double().mean().item() for k, w in SCORE_WEIGHTS.items())
    metrics["queries"] = positions.shape[0]
    metrics["queries_without_match"] = int((~matched).sum())
    return metrics


def _relevant_counts(query_labels: torch.Tensor, gallery_labels: torch.Tensor) -> torch.Tensor:
    """(Q,) long: number of gallery items sharing each query's label (R)."""
    values, counts = torch.unique(gallery_labels, return_counts=True)
    slot = torch.searchsorted(values, query_labels).clamp(max=values.numel() - 1)
    return torch.where(values[slot] == query_labels, counts[slot], 0)


# --- shared checks and conversions ------------------------------------------------------------


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be distinct positive ints such as (1, 5, 10), got {ks}")
    return ks


def _check_labels(
    labels: torch.Tensor, length: int, name: str, num_values: int | None = None, ndim: int = 1
) -> torch.Tensor:
    """labels as long, after checking: integer, `ndim` dims, `length` rows, and, where
    num_values is given, in [0, num_values)."""
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != ndim or len(labels) != length:
        raise ValueError(
            f"{name} must be a {ndim}-d integer tensor with {length} rows, got {labels.dtype} {tuple(labels.shape)}"
        )
    if num_values is not None and labels.numel() and (labels.min() < 0 or labels.max() >= num_values):
        found = f"[{int(labels.min())}, {int(labels.max())}]"
        raise ValueError(f"{name} must hold values in [0, {num_values}), got values in {found}")
    return labels.long()


def _score_dtype(x: torch.Tensor) -> torch.Tensor:
    # Half-precision scores would tie items that differ; float64 (tests) is kept as it is.
    return x if x.dtype == torch.float64 else x.float()


def _percent(hits: torch.Tensor) -> float:
    return 100.0 * hits.double().mean().item()
