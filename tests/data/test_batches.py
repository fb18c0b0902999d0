"""Training and evaluation batches: padding trimmed without changing what the encoder sees."""

import torch

from clipsearch.data.batches import trim_padding


def test_trailing_columns_padded_in_every_row_are_dropped():
    tokens = {"input_ids": torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])}
    trimmed = trim_padding(tokens)
    assert trimmed["input_ids"].tolist() == [[5, 6], [7, 0]]
    assert trimmed["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_tokens_without_an_attention_mask_are_left_as_they_are():
    tokens = {"input_ids": torch.tensor([[5, 6, 0, 0]])}
    assert trim_padding(tokens) is tokens


def test_a_text_encoder_gives_the_same_embeddings_for_trimmed_tokens():
    from clipsearch.models import build_text_tower

    tower = build_text_tower("hf:minilm", layers=1, max_length=24)
    tokens = tower.tokenize(["a thin seven", "a very thick handwritten two leaning far left, wide"])
    with torch.no_grad():
        full, trimmed = tower.module(**tokens), tower.module(**trim_padding(tokens))
    assert trim_padding(tokens)["input_ids"].shape[1] < 24
    assert torch.allclose(full, trimmed, atol=1e-5)
