"""Evaluation metrics against naive loops, and hand-built cases for ties, chunking and edges.

The naive references loop over queries and candidates in pure python and sort candidates with
an explicit pessimistic rule: on equal scores, wrong candidates come first. Integer-valued
embeddings give exact scores, hence many exact ties, so they test the tie rule hard.
"""

import math

import pytest
import torch

from clipsearch.metrics import (
    confusion_matrix,
    knn_accuracy,
    knn_classify,
    knn_search,
    objective,
    query_gallery_metrics,
    ranking_metrics,
    retrieval_metrics,
    submission,
    topk_accuracy,
    zeroshot_classifier,
)

# --- naive references -------------------------------------------------------------------------


def dot(u, v):
    return sum(a * b for a, b in zip(u, v))


def pessimistic_order(scores, correct):
    """Candidate indices best first; a wrong candidate comes before a correct one it ties."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], correct[j]))


def first_correct_rank(scores, correct):
    order = pessimistic_order(scores, correct)
    return next(r for r, j in enumerate(order) if correct[j])


def naive_retrieval(image_emb, text_emb, text_to_image, ks):
    images, texts, owner = image_emb.tolist(), text_emb.tolist(), text_to_image.tolist()
    tr_ranks, ir_ranks = [], []
    for i, u in enumerate(images):
        scores = [dot(u, v) for v in texts]
        tr_ranks.append(first_correct_rank(scores, [owner[c] == i for c in range(len(texts))]))
    for c, v in enumerate(texts):
        scores = [dot(v, u) for u in images]
        ir_ranks.append(first_correct_rank(scores, [i == owner[c] for i in range(len(images))]))
    metrics = {}
    for name, ranks in (("tr", tr_ranks), ("ir", ir_ranks)):
        for k in ks:
            metrics[f"{name}@{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
    metrics["r_mean"] = sum(metrics.values()) / len(metrics)
    return metrics


def naive_query_gallery(query_emb, query_labels, gallery_emb, gallery_labels, ks):
    queries, gallery = query_emb.tolist(), gallery_emb.tolist()
    size = len(gallery)
    keys = ["accuracy@1", "map@r"] + [f"precision@{k}" for k in ks] + [f"hit@{k}" for k in {*ks, 1, 5, 10}]
    sums = dict.fromkeys(keys, 0.0)
    without_match = 0
    for u, label in zip(queries, query_labels.tolist()):
        correct = [g == label for g in gallery_labels.tolist()]
        flags = [correct[j] for j in pessimistic_order([dot(u, v) for v in gallery], correct)]
        relevant = sum(correct)
        sums["accuracy@1"] += flags[0]
        for k in ks:
            sums[f"precision@{k}"] += sum(flags[:k]) / min(k, size)
        for k in {*ks, 1, 5, 10}:
            sums[f"hit@{k}"] += any(flags[:k])
        if relevant:
            sums["map@r"] += sum(sum(flags[: i + 1]) / (i + 1) for i in range(relevant) if flags[i]) / relevant
        else:
            without_match += 1
    n = len(queries)
    metrics = {key: 100.0 * value / n for key, value in sums.items()}
    metrics["map@r"] = 100.0 * sums["map@r"] / (n - without_match)
    metrics["score"] = 6 * metrics["hit@1"] + 3 * metrics["hit@5"] + metrics["hit@10"]
    metrics["queries"], metrics["queries_without_match"] = n, without_match
    return metrics


# --- data -------------------------------------------------------------------------------------


def embeddings(kind, n, d, seed):
    """'float': normalised gaussian (no ties); 'ties': entries in {-1, 0, 1} (exact ties galore)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "float":
        return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return torch.randint(-1, 2, (n, d), generator=g).double()


def captions_of(num_images, seed):
    """text_to_image with 1 to 3 captions per image, shuffled."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 4, (num_images,), generator=g)
    owner = torch.repeat_interleave(torch.arange(num_images), counts)
    return owner[torch.randperm(len(owner), generator=g)]


# --- image-text retrieval ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["float", "ties"])
@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_matches_naive_loop(kind, seed):
    text_to_image = captions_of(12, seed)
    images = embeddings(kind, 12, 4, seed)
    texts = embeddings(kind, len(text_to_image), 4, seed + 100)
    ks = (1, 2, 5, 10)
    got = retrieval_metrics(images, texts, text_to_image, ks=ks)
    assert got == pytest.approx(naive_retrieval(images, texts, text_to_image, ks))


@pytest.mark.parametrize("chunk_size", [1, 3, 10_000])
def test_retrieval_does_not_depend_on_chunk_size(chunk_size):
    text_to_image = captions_of(20, 3)
    images, texts = embeddings("ties", 20, 3, 3), embeddings("ties", len(text_to_image), 3, 4)
    expected = retrieval_metrics(images, texts, text_to_image, chunk_size=len(text_to_image))
    assert retrieval_metrics(images, texts, text_to_image, chunk_size=chunk_size) == expected
    assert 0 < expected["r_mean"] < 100  # ties and hits both present: the case is not trivial


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_constant_embeddings_retrieve_nothing(dtype):
    text_to_image = torch.arange(300).repeat(3)[:700]
    vector = torch.nn.functional.normalize(torch.randn(1, 64), dim=1)
    metrics = retrieval_metrics(vector.expand(300, 64).to(dtype), vector.expand(700, 64).to(dtype), text_to_image)
    assert set(metrics.values()) == {0.0}


def test_identical_captions_on_two_images_are_no_hit():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    shared = torch.tensor([[0.6, 0.8]])
    metrics = retrieval_metrics(images, shared.repeat(2, 1), torch.tensor([0, 1]), ks=(1, 2))
    # each image ties its own caption with the other image's copy: no text hit at 1; the copy
    # owned by image 1 does find image 1 first (0.8 > 0.6)
    assert metrics == {"tr@1": 0.0, "tr@2": 100.0, "ir@1": 50.0, "ir@2": 100.0, "r_mean": 62.5}


def test_image_whose_second_caption_is_its_best_is_a_text_hit():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.8, 0.6]])
    # image 0: captions 0 (score 0.6) and 1 (score 1.0); image 1: caption 2 (score 0.6), beaten
    # by caption 0 (0.8)
    metrics = retrieval_metrics(images, texts, torch.tensor([0, 0, 1]), ks=(1,))
    assert metrics["tr@1"] == 50.0
    assert metrics["ir@1"] == pytest.approx(100 / 3)  # only caption 1 finds its image first


def test_scores_within_tie_tol_count_as_ties():
    images = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    # image 0 prefers its own caption by 1e-9, far below float32 resolution: a tie
    own = torch.tensor([[0.5 + 1e-9, 0.0]], dtype=torch.float64)
    other = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    texts, owner = torch.cat([own, other]), torch.tensor([0, 1])
    assert retrieval_metrics(images, texts, owner, ks=(1,))["tr@1"] == 0.0
    assert retrieval_metrics(images, texts, owner, ks=(1,), tie_tol=0.0)["tr@1"] == 50.0


def test_retrieval_rejects_image_without_caption_and_diverged_embeddings():
    images, texts = torch.eye(3), torch.eye(3)[:2]
    with pytest.raises(ValueError, match=r"1 images have no caption.*\[2\]"):
        retrieval_metrics(images, texts, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="NaN or inf"):
        retrieval_metrics(images, torch.full((3, 3), float("nan")), torch.arange(3))


# --- zero-shot classification -----------------------------------------------------------------


def test_zeroshot_classifier_is_renormalised_mean_of_normalised_prompts():
    prompts = torch.tensor([[[3.0, 0.0], [0.0, 1.0]], [[0.0, -2.0], [0.0, -5.0]]])  # (C=2, P=2, d=2)
    expected = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert torch.allclose(zeroshot_classifier(prompts), expected)


@pytest.mark.parametrize("kind", ["float", "ties"])
def test_topk_accuracy_matches_naive_loop(kind):
    scores = embeddings(kind, 40, 5, 7)  # 40 samples x 5 classes
    labels = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(7))
    ks = (1, 2, 5, 8)
    ranks = [first_correct_rank(row, [c == y for c in range(5)]) for row, y in zip(scores.tolist(), labels.tolist())]
    expected = {f"acc@{k}": 100.0 * sum(r < k for r in ranks) / 40 for k in ks}
    assert topk_accuracy(scores, labels, ks=ks) == pytest.approx(expected)


def test_topk_accuracy_true_class_tied_with_a_wrong_one_ranks_below_it():
    scores = torch.tensor([[2.0, 2.0, 0.0], [2.0, 2.0, 0.0]])
    assert topk_accuracy(scores, torch.tensor([0, 1]), ks=(1, 2)) == {"acc@1": 0.0, "acc@2": 100.0}


def test_topk_accuracy_with_k_above_the_number_of_classes_is_100():
    scores = torch.tensor([[0.0, 1.0, 2.0]])
    assert topk_accuracy(scores, torch.tensor([0]), ks=(1, 3, 5)) == {"acc@1": 0.0, "acc@3": 100.0, "acc@5": 100.0}


def test_objective_is_mean_of_tr1_ir1_acc1():
    assert objective({"tr@1": 15.0, "ir@1": 11.52, "acc@1": 28.54, "tr@5": 99.0}) == pytest.approx(18.3533, abs=1e-4)
    with pytest.raises(ValueError, match="acc@1"):
        objective({"tr@1": 1.0, "ir@1": 1.0})


# --- kNN --------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_knn_search_equals_matmul_topk(chunk_size):
    g = torch.Generator().manual_seed(0)
    queries, keys = torch.randn(40, 16, generator=g), torch.randn(300, 16, generator=g)
    scores, indices = knn_search(queries, keys, 7, chunk_size=chunk_size)
    expected_scores, expected_indices = (queries @ keys.T).topk(7, dim=1)
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(scores, expected_scores, atol=1e-5)


def test_knn_search_caps_k_at_number_of_keys():
    scores, indices = knn_search(torch.randn(4, 3), torch.randn(5, 3), 50)
    assert scores.shape == indices.shape == (4, 5)
    assert all(sorted(row) == list(range(5)) for row in indices.tolist())


@pytest.mark.parametrize("weighted", [False, True])
def test_knn_classify_matches_naive_vote(weighted):
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(60, 8, generator=g), torch.randn(30, 8, generator=g)
    train_labels = torch.randint(0, 4, (60,), generator=g)
    expected = []
    for u in test.tolist():
        scores = [dot(u, v) for v in train.tolist()]
        nearest = sorted(range(60), key=lambda j: -scores[j])[:4]
        votes = {}
        for j in nearest:
            label = int(train_labels[j])
            votes[label] = votes.get(label, 0.0) + (max(scores[j], 0.0) if weighted else 1.0)
        best = max(votes.values())
        # a tied vote goes to the class of the nearer neighbour
        winner = next(j for j in nearest if math.isclose(votes[int(train_labels[j])], best))
        expected.append(int(train_labels[winner]))
    assert knn_classify(train, train_labels, test, k=4, weighted=weighted).tolist() == expected


def test_knn_vote_tie_goes_to_the_nearer_neighbour_class():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1]])
    test = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # sample 0 is nearer train 0 (class 1), sample 1 nearer train 1 (class 0)
    assert knn_classify(train, torch.tensor([1, 0]), test, k=2).tolist() == [1, 0]


def test_knn_accuracy_is_percent_of_correct_votes():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    test = torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.9, 0.0], [0.0, 0.8]])
    assert knn_accuracy(train, torch.tensor([0, 1]), test, torch.tensor([0, 1, 1, 1]), k=1) == 75.0


def test_confusion_matrix_rows_are_true_classes():
    pred, labels = torch.tensor([0, 2, 2, 1, 0]), torch.tensor([0, 2, 1, 1, 1])
    expected = torch.zeros(3, 3, dtype=torch.long)
    for p, y in zip(pred.tolist(), labels.tolist()):
        expected[y, p] += 1
    assert torch.equal(confusion_matrix(pred, labels, 3), expected)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


# --- query/gallery retrieval ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["float", "ties"])
# 40 > gallery size; with 2 identities R > 10, so map@r must search past the top 10
@pytest.mark.parametrize("identities, ks", [(5, (1, 3, 10, 40)), (2, (1, 3))])
@pytest.mark.parametrize("seed", [0, 1])
def test_query_gallery_matches_naive_loop(kind, identities, ks, seed):
    g = torch.Generator().manual_seed(seed)
    query_labels = torch.randint(0, identities + 1, (15,), generator=g)  # the last is never in the gallery
    gallery_labels = torch.randint(0, identities, (25,), generator=g)
    queries, gallery = embeddings(kind, 15, 4, seed).float(), embeddings(kind, 25, 4, seed + 50).float()
    got = query_gallery_metrics(queries, query_labels, gallery, gallery_labels, ks=ks)
    expected = naive_query_gallery(queries, query_labels, gallery, gallery_labels, ks)
    expected = {key: value for key, value in expected.items() if key in got}
    assert got == pytest.approx(expected)
    assert got["queries_without_match"] == int((query_labels == identities).sum())


@pytest.mark.parametrize("chunk_size", [1, 3, 10_000])
def test_query_gallery_does_not_depend_on_chunk_size(chunk_size):
    g = torch.Generator().manual_seed(5)
    query_labels, gallery_labels = torch.randint(0, 4, (17,), generator=g), torch.randint(0, 4, (40,), generator=g)
    queries, gallery = embeddings("ties", 17, 3, 5).float(), embeddings("ties", 40, 3, 6).float()
    expected = query_gallery_metrics(queries, query_labels, gallery, gallery_labels, chunk_size=40)
    assert query_gallery_metrics(queries, query_labels, gallery, gallery_labels, chunk_size=chunk_size) == expected


def test_tie_running_past_the_search_depth_counts_against_the_query():
    # Collapsed gallery: 2 correct items first, then 28 wrong ones, all scoring the same. The
    # search returns the top 11 and faiss lists the correct ones in it; only ranking the whole
    # gallery shows the 28 wrong items that tie them.
    gallery, labels = torch.ones(30, 4), torch.tensor([0, 0] + [1] * 28)
    query, query_labels = torch.ones(1, 4), torch.tensor([0])
    assert {0, 1} <= set(knn_search(query, gallery, 11)[1][0].tolist())  # the case the test is about
    metrics = query_gallery_metrics(query, query_labels, gallery, labels)
    assert metrics["hit@10"] == 0.0 and metrics["score"] == 0.0


def test_ranking_metrics_with_scores_puts_tied_wrong_items_first():
    ranking, scores = torch.tensor([[0, 1, 2]]), torch.tensor([[0.9, 0.9, 0.5]])
    query_labels, gallery_labels = torch.tensor([7]), torch.tensor([7, 3, 3])
    assert ranking_metrics(ranking, query_labels, gallery_labels, ks=(1,))["hit@1"] == 100.0
    assert ranking_metrics(ranking, query_labels, gallery_labels, ks=(1,), scores=scores)["hit@1"] == 0.0


def test_map_at_r_hand_computed():
    # R = 3 correct items (labels 1); the ranking puts them at positions 1, 3 and 6.
    gallery_labels = torch.tensor([1, 0, 1, 0, 0, 1, 0])
    ranking = torch.tensor([[0, 1, 2, 3, 4, 5, 6]])
    metrics = ranking_metrics(ranking, torch.tensor([1]), gallery_labels, ks=(1, 5))
    # AP@R = (1/R) sum over the top R of P@i at correct items = (1/1 + 2/3) / 3
    assert metrics["map@r"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert metrics["precision@5"] == pytest.approx(40.0)
    assert metrics["score"] == 1000.0  # hit at 1, so at 5 and 10 too


def test_perfect_ranking_scores_1000():
    labels = torch.arange(8).repeat_interleave(3)  # 8 identities, 3 gallery images each
    centres = torch.eye(8)
    gallery = centres[labels] + 0.01 * torch.randn(24, 8, generator=torch.Generator().manual_seed(0))
    metrics = query_gallery_metrics(centres, torch.arange(8), gallery, labels, ks=(1, 3))
    assert metrics["score"] == 1000.0
    assert all(metrics[key] == 100.0 for key in ("accuracy@1", "precision@1", "precision@3", "hit@3", "map@r"))


def test_precision_with_k_above_gallery_size_divides_by_gallery_size():
    gallery, labels = torch.eye(3), torch.tensor([0, 0, 0])
    metrics = query_gallery_metrics(torch.ones(1, 3), torch.tensor([0]), gallery, labels, ks=(10,))
    assert metrics["precision@10"] == 100.0


def test_query_without_match_is_a_miss_left_out_of_map():
    gallery, gallery_labels = torch.eye(2), torch.tensor([0, 1])
    queries, query_labels = torch.eye(2), torch.tensor([0, 9])
    metrics = query_gallery_metrics(queries, query_labels, gallery, gallery_labels, ks=(1,))
    assert metrics["hit@1"] == 50.0 and metrics["precision@1"] == 50.0
    assert metrics["map@r"] == 100.0
    assert metrics["queries_without_match"] == 1 and metrics["queries"] == 2


def test_constant_embeddings_score_0_on_query_gallery():
    g = torch.Generator().manual_seed(2)
    query_labels, gallery_labels = torch.randint(0, 3, (10,), generator=g), torch.randint(0, 3, (50,), generator=g)
    metrics = query_gallery_metrics(torch.ones(10, 8), query_labels, torch.ones(50, 8), gallery_labels)
    assert metrics["score"] == 0.0 and metrics["map@r"] == 0.0


def test_submission_lists_gallery_files_best_first():
    ranking = torch.tensor([[2, 0, 1], [1, 2, 0]])
    assert submission(["q0.jpg", "q1.jpg"], ["a.jpg", "b.jpg", "c.jpg"], ranking, top=2) == {
        "q0.jpg": ["c.jpg", "a.jpg"],
        "q1.jpg": ["b.jpg", "c.jpg"],
    }
    with pytest.raises(ValueError, match="k >= top"):
        submission(["q0.jpg", "q1.jpg"], [f"{i}.jpg" for i in range(20)], ranking, top=10)
    with pytest.raises(ValueError, match="duplicates"):
        submission(["q.jpg", "q.jpg"], ["a.jpg", "b.jpg", "c.jpg"], ranking)


def test_chance_levels_of_the_embedded_default_are_the_readmes():
    from clipsearch.metrics import chance_levels

    chance = chance_levels([5] * 1000, 10)
    assert chance["tr1"] == pytest.approx(0.1) and chance["ir1"] == pytest.approx(0.1)
    assert chance["acc1"] == 10 and chance["objective"] == pytest.approx(3.4)


def test_chance_levels_follow_the_data_evaluated_on():
    from clipsearch.metrics import chance_levels

    chance = chance_levels([1] * 90, 3)  # 90 retrieval images of one caption, 3 classes
    assert chance["tr1"] == pytest.approx(100 / 90) and chance["acc1"] == pytest.approx(100 / 3)
    assert chance["objective"] == pytest.approx((200 / 90 + 100 / 3) / 3)
