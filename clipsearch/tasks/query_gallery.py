"""Cross-domain query/gallery retrieval with an image tower (seed 000): evaluation and submission.

`query_gallery_evaluator` is the image task's evaluator "query_gallery" (`image.evaluator`,
registered by clipsearch.tasks):
after every epoch it embeds the queries and the gallery with the tower (the features before any
projection head, L2-normalised), ranks the gallery by cosine similarity (faiss, exact inner
product, chunked) and reports the seed 000 metrics: accuracy1, precision{1,5,10}, hit{1,5,10},
mapr and score = 600 Hit@1 + 300 Hit@5 + 100 Hit@10 (of 1000); `objective` = score / 10, so that
it reads as a percentage like every other objective.

`rank_gallery` gives the same metrics plus the competition's submission
{query file: [top-10 gallery files, best first]} for a trained (or untouched) encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import metrics as M
from ..data.querygallery import QueryGallery, load_query_gallery
from ..knn import knn_search
from .image import embed

SUBMISSION_DEPTH = 10


def load_retrieval_sets(cfg) -> QueryGallery:
    r = cfg.retrieval
    return load_query_gallery(r.query, r.gallery, r.labels, cfg.data.image_size, cfg.data.cache_dir,
                              cfg.data.on_corrupt)


@dataclass
class Ranked:
    metrics: dict[str, float]
    submission: dict[str, list[str]]


def score_embeddings(query: torch.Tensor, gallery: torch.Tensor, sets: QueryGallery) -> dict[str, float]:
    """The seed 000 metrics of normalised embeddings, keys without '@' (hit@1 -> hit1)."""
    query_labels, gallery_labels = (torch.from_numpy(x) for x in sets.labels())
    found = M.query_gallery_metrics(query, query_labels, gallery, gallery_labels)
    out = {k.replace("@", ""): float(v) for k, v in found.items()}
    out["objective"] = out["score"] / 10.0
    return out


def rank_gallery(model, sets: QueryGallery, device: torch.device, batch_size: int, autocast=None) -> Ranked:
    """Metrics and the top-10 submission of `model`'s tower on the query/gallery sets."""
    query, _ = embed(model, sets.query.images, device, batch_size, autocast)
    gallery, _ = embed(model, sets.gallery.images, device, batch_size, autocast)
    _, ranking = knn_search(query, gallery, min(SUBMISSION_DEPTH, len(gallery)))
    submission = M.submission(sets.query.names, sets.gallery.names, ranking, top=SUBMISSION_DEPTH)
    return Ranked(score_embeddings(query, gallery, sets), submission)


def query_gallery_evaluator(splits, cfg, device: torch.device):
    """The image task's evaluator over cfg.retrieval's query and gallery (loaded once)."""
    sets = load_retrieval_sets(cfg)

    def evaluate(model, autocast) -> dict[str, float]:
        query, _ = embed(model, sets.query.images, device, cfg.eval.batch_size, autocast)
        gallery, _ = embed(model, sets.gallery.images, device, cfg.eval.batch_size, autocast)
        return score_embeddings(query, gallery, sets)

    return evaluate



#: what query_gallery_evaluator reports (score_embeddings' keys)
METRICS = ("objective", "score", "accuracy1", "precision1", "precision5", "precision10", "hit1", "hit5", "hit10",
           "mapr")

