"""Training and evaluation batches (clipsearch.data.batches): an epoch shows every image once with
one of its own captions, a seed fixes it, padding is trimmed without changing what the encoder
sees, images are normalised with the tower's statistics, augmentation only shifts and blurs."""

import numpy as np
import pytest
import torch

from clipsearch.data.batches import (IMAGENET, ImagePreprocess, PairBatches, TextBank, Tokenizer,
                                     check_image_size, random_low_resolution, random_shift, to_float_images,
                                     trim_padding)
from clipsearch.data.imageset import ImageTextSet
from clipsearch.errors import InputError

SIDE = 8
LENGTH = 6  # tokens per caption before trimming; the longest caption below has 4 words


def tokenize_words(texts: list[str]) -> dict[str, torch.Tensor]:
    """One token a word, padded to LENGTH: a number n becomes 1000 + n (so a row names its
    image), any other word its length."""
    ids = torch.zeros(len(texts), LENGTH, dtype=torch.long)
    mask = torch.zeros(len(texts), LENGTH, dtype=torch.long)
    for row, text in enumerate(texts):
        words = text.split()
        ids[row, :len(words)] = torch.tensor([1000 + int(w) if w.isdigit() else len(w) for w in words])
        mask[row, :len(words)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def image_set(n: int) -> ImageTextSet:
    """n (<= 36) images, image i filled with the value 7 i, captioned "digit i" and "a picture of i"."""
    images = np.repeat(np.arange(n, dtype=np.uint8) * 7, SIDE * SIDE * 3).reshape(n, SIDE, SIDE, 3)
    captions = [[f"digit {i}", f"a picture of {i}"] for i in range(n)]
    return ImageTextSet(images, captions, [str(i) for i in range(n)], labels=np.arange(n, dtype=np.int64) % 3)


def batches_of(n: int, batch_size: int, augment: bool = False) -> PairBatches:
    data = image_set(n)
    return PairBatches(data, TextBank.build(data.captions, tokenize_words), batch_size, augment=augment)


def image_of_each_caption(tokens: dict[str, torch.Tensor]) -> list[int]:
    return (tokens["input_ids"].max(1).values - 1000).tolist()


# ------------------------------------------------------------------------------------------ epochs

@pytest.mark.parametrize("n, batch_size, sizes", [
    (10, 4, [4, 4, 2]),
    (8, 4, [4, 4]),
    (9, 4, [4, 4]),  # a last batch of one is dropped: a contrastive loss needs two samples
])
def test_an_epoch_gives_every_image_once_in_batches_of_the_asked_size(n, batch_size, sizes):
    batches = batches_of(n, batch_size)
    epoch = list(batches.epoch(torch.Generator().manual_seed(0)))
    assert len(batches) == len(epoch) and [len(b.index) for b in epoch] == sizes
    seen = torch.cat([b.index for b in epoch]).tolist()
    assert len(set(seen)) == len(seen) == sum(sizes) and set(seen) <= set(range(n))
    for batch in epoch:
        assert batch.images.shape == (len(batch.index), 3, SIDE, SIDE) and batch.images.dtype == torch.float32
        assert batch.index.dtype == torch.int64 and batch.tokens["input_ids"].dtype == torch.int64
        assert torch.equal(batch.labels, batch.index % 3) and batch.text_features is None


def test_each_image_comes_with_one_of_its_own_captions_and_its_own_pixels():
    for batch in batches_of(10, 4).epoch(torch.Generator().manual_seed(0)):
        assert image_of_each_caption(batch.tokens) == batch.index.tolist()
        assert torch.equal(batch.images, to_float_images(image_set(10).images[batch.index.numpy()]))


def test_the_same_seed_gives_the_same_epoch_and_another_seed_another():
    def epoch(seed):
        return list(batches_of(10, 4, augment=True).epoch(torch.Generator().manual_seed(seed)))

    first, again, other = epoch(0), epoch(0), epoch(1)
    for a, b in zip(first, again):
        assert torch.equal(a.index, b.index) and torch.equal(a.images, b.images)
        assert torch.equal(a.tokens["input_ids"], b.tokens["input_ids"])
    assert [a.index.tolist() for a in first] != [o.index.tolist() for o in other]


def test_captions_are_drawn_at_random_among_the_images_own():
    bank = TextBank.build(image_set(3).captions, tokenize_words)
    rows = bank.rows_for(np.full(200, 2), torch.Generator().manual_seed(0))
    assert set(rows.tolist()) == set(bank.caption_rows[2].tolist())  # both captions of image 2, nothing else
    assert 60 < int((rows == bank.caption_rows[2][0]).sum()) < 140  # about half each


def test_batch_tokens_are_trimmed_to_the_longest_caption_in_the_batch():
    for batch in batches_of(10, 4).epoch(torch.Generator().manual_seed(0)):
        mask = batch.tokens["attention_mask"]
        assert mask.shape[1] == int(mask.sum(1).max()) < LENGTH
        assert bool(mask[:, -1].any())


# -------------------------------------------------------------------------------------- text bank

def test_the_text_bank_tokenises_each_distinct_caption_once():
    calls = []

    def tokenize(texts):
        calls.append(list(texts))
        return tokenize_words(texts)

    bank = TextBank.build([["a b", "c"], ["c"], ["a b"]], tokenize)
    assert calls == [["a b", "c"]]
    assert [rows.tolist() for rows in bank.caption_rows] == [[0, 1], [1], [0]]
    assert bank.tokens["input_ids"].shape == (2, LENGTH)


def test_a_keyed_tokenizers_bank_is_built_once_per_process_and_per_caption_set():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return tokenize_words(texts)

    tokenizer = Tokenizer(encode, key="test-words:a")
    first = TextBank.build([["x y", "z"], ["z"]], tokenizer)
    first.features = torch.ones(2, 3)  # a frozen tower's features: this run's, not the next's
    again = TextBank.build([["x y", "z"], ["z"]], tokenizer)
    assert calls == [["x y", "z"]]
    assert again.features is None and again.tokens["input_ids"] is first.tokens["input_ids"]
    assert [r.tolist() for r in again.caption_rows] == [[0, 1], [1]]
    TextBank.build([["x y"], ["z"]], tokenizer)  # the same texts, other images: another bank
    TextBank.build([["x y", "z"], ["z"]], Tokenizer(encode, key="test-words:b"))  # another tokenizer
    TextBank.build([["x y", "z"], ["z"]], encode)  # no key: never kept
    assert len(calls) == 4


def test_a_trial_with_another_data_fraction_replaces_the_training_bank_and_keeps_the_validation_one():
    calls = []
    tokenizer = Tokenizer(lambda texts: calls.append(list(texts)) or tokenize_words(texts), key="test-words:lru")
    train_a, train_b, val = [["p q"], ["r"]], [["p q"]], [["s"], ["t u"]]
    for train_captions in (train_a, train_b, train_a):  # three trials: fractions a, b, a again
        TextBank.build(train_captions, tokenizer)
        TextBank.build(val, tokenizer)
    assert calls == [["p q", "r"], ["s", "t u"], ["p q"], ["p q", "r"]]  # the validation bank once


def test_the_hf_towers_tokenizer_is_keyed_by_its_files_and_length():
    from clipsearch.models import build_text_tower

    short, long = (build_text_tower("hf:minilm", layers=1, max_length=n).tokenize for n in (16, 24))
    assert short.key and long.key and short.key != long.key and "max_length=16" in short.key


def test_a_frozen_text_towers_features_ride_along_instead_of_tokens():
    batches = batches_of(10, 4)
    rows = len(batches.text.tokens["input_ids"])
    batches.text.features = torch.arange(rows, dtype=torch.float32)[:, None].repeat(1, 5)  # row r: r r r r r
    for batch in batches.epoch(torch.Generator().manual_seed(0)):
        assert batch.tokens == {} and batch.text_features.shape == (len(batch.index), 5)
        for image, features in zip(batch.index.tolist(), batch.text_features):
            assert int(features[0]) in batches.text.caption_rows[image]


# ---------------------------------------------------------------------------------------- padding

def test_trailing_columns_padded_in_every_row_are_dropped():
    tokens = {"input_ids": torch.tensor([[5, 6, 0, 0], [7, 0, 0, 0]]),
              "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])}
    trimmed = trim_padding(tokens)
    assert trimmed["input_ids"].tolist() == [[5, 6], [7, 0]]
    assert trimmed["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_a_padding_column_before_a_used_one_is_kept():
    tokens = {"input_ids": torch.tensor([[5, 0, 6, 0], [7, 0, 0, 0]]),
              "attention_mask": torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0]])}
    assert trim_padding(tokens)["input_ids"].tolist() == [[5, 0, 6], [7, 0, 0]]


def test_tokens_without_padding_to_drop_are_left_as_they_are():
    full = {"input_ids": torch.tensor([[5, 6]]), "attention_mask": torch.tensor([[1, 1]])}
    assert trim_padding(full) is full
    no_mask = {"input_ids": torch.tensor([[5, 6, 0, 0]])}
    assert trim_padding(no_mask) is no_mask


def test_rows_that_are_all_padding_keep_one_column():
    tokens = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.zeros(2, 4, dtype=torch.long)}
    assert trim_padding(tokens)["input_ids"].shape == (2, 1)


def test_a_text_encoder_gives_the_same_embeddings_for_trimmed_tokens():
    from clipsearch.models import build_text_tower

    tower = build_text_tower("hf:minilm", layers=1, max_length=24)
    tokens = tower.tokenize(["a thin seven", "a very thick handwritten two leaning far left, wide"])
    with torch.no_grad():
        full, trimmed = tower.module(**tokens), tower.module(**trim_padding(tokens))
    assert trim_padding(tokens)["input_ids"].shape[1] < 24
    assert torch.allclose(full, trimmed, atol=1e-5)


# ------------------------------------------------------------------------------ per-tower normalisation

def _clip_like():
    return ImagePreprocess((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711),
                           size=8, fixed_size=True, source="test")


def test_images_are_normalised_with_the_towers_own_mean_and_std():
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255.0
    for preprocess in (IMAGENET, _clip_like()):
        mean, std = (torch.tensor(v, dtype=torch.double).view(1, 3, 1, 1) for v in (preprocess.mean, preprocess.std))
        expected = ((x - mean) / std).float()
        assert torch.allclose(to_float_images(images, preprocess), expected, atol=1e-5)
    assert not torch.allclose(to_float_images(images, IMAGENET), to_float_images(images, _clip_like()), atol=1e-2)


def test_black_and_white_pixels_map_to_minus_mean_over_std_and_one_minus_mean_over_std(tmp_path):
    """From a read-only memmap (the decoded-image cache), which stays as it was."""
    path = tmp_path / "images.npy"
    np.save(path, np.stack([np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)]))
    images = np.load(path, mmap_mode="r")
    x = to_float_images(images)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32 and x.is_contiguous()
    mean, std = torch.tensor(IMAGENET.mean), torch.tensor(IMAGENET.std)
    assert torch.allclose(x[0, :, 0, 0], -mean / std, atol=1e-6)
    assert torch.allclose(x[1, :, 0, 0], (1 - mean) / std, atol=1e-6)
    assert images[1].min() == 255 and images[0].max() == 0


def test_pair_batches_normalise_with_the_towers_preprocessing_and_check_its_size():
    images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    data = ImageTextSet(images, [["a"], ["b"], ["c"], ["d"]], ["0", "1", "2", "3"])
    bank = TextBank.build(data.captions, lambda texts: {"input_ids": torch.arange(len(texts))[:, None]})
    batch = next(PairBatches(data, bank, 4, augment=False, preprocess=_clip_like()).epoch(torch.Generator()))
    assert torch.equal(batch.images, to_float_images(images[batch.index.numpy()], _clip_like()))
    with pytest.raises(InputError, match="data.image_size=8"):
        check_image_size(_clip_like(), 28)


def test_only_a_fixed_size_tower_refuses_another_image_size():
    check_image_size(_clip_like(), 8)
    check_image_size(ImagePreprocess(IMAGENET.mean, IMAGENET.std, size=8, fixed_size=False), 28)
    with pytest.raises(InputError, match="data.image_size=16"):
        PairBatches(image_set(4), TextBank.build(image_set(4).captions, tokenize_words), 2, augment=False,
                    preprocess=ImagePreprocess(IMAGENET.mean, IMAGENET.std, size=SIDE * 2, fixed_size=True))


# ----------------------------------------------------------------------------------- augmentation

def translated(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (3, S, S) moved dy rows down and dx columns right, zeros where it came from outside."""
    out = torch.zeros_like(x)
    s = x.shape[-1]
    out[:, max(dy, 0):s + min(dy, 0), max(dx, 0):s + min(dx, 0)] = x[:, max(-dy, 0):s - max(dy, 0),
                                                                     max(-dx, 0):s - max(dx, 0)]
    return out


def test_random_shift_translates_each_image_by_its_own_offset_within_the_limit():
    x = torch.randn(32, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    shifted = random_shift(x, 2, torch.Generator().manual_seed(1))
    offsets = []
    for image, out in zip(x, shifted):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(out, translated(image, dy, dx))]
        assert len(found) == 1, "not a translation by at most 2 pixels"
        offsets += found
    assert len(set(offsets)) > 5  # each image draws its own
    assert random_shift(x, 0, torch.Generator()) is x


def test_low_resolution_blurs_the_chosen_share_and_leaves_the_rest():
    x = torch.randn(64, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    assert random_low_resolution(x, torch.Generator(), share=0.0) is x
    for seed in range(5):
        out = random_low_resolution(x, torch.Generator().manual_seed(seed), share=0.5)
        changed = (out != x).flatten(1).any(1)
        if changed.any():
            break
    assert 10 < int(changed.sum()) < 54 and torch.equal(out[~changed], x[~changed])


def test_augment_off_gives_the_plain_images_and_on_changes_them_with_the_same_captions():
    plain = list(batches_of(32, 32, augment=False).epoch(torch.Generator().manual_seed(0)))[0]
    augmented = list(batches_of(32, 32, augment=True).epoch(torch.Generator().manual_seed(0)))[0]
    assert torch.equal(plain.index, augmented.index)
    assert torch.equal(plain.images, to_float_images(image_set(32).images[plain.index.numpy()]))
    assert augmented.images.shape == plain.images.shape and not torch.equal(augmented.images, plain.images)
    assert image_of_each_caption(augmented.tokens) == augmented.index.tolist()
