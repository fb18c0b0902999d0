"""Training and evaluation batches: padding trimmed without changing what the encoder sees."""

import pytest
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


# ------------------------------------------------------------------------------ per-tower normalisation

def _clip_like():
    from clipsearch.data.batches import ImagePreprocess

    return ImagePreprocess((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711),
                           size=8, fixed_size=True, source="test")


def test_images_are_normalised_with_the_towers_own_mean_and_std():
    import numpy as np

    from clipsearch.data.batches import IMAGENET, to_float_images

    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255.0
    for preprocess in (IMAGENET, _clip_like()):
        mean, std = (torch.tensor(v, dtype=torch.double).view(1, 3, 1, 1) for v in (preprocess.mean, preprocess.std))
        expected = ((x - mean) / std).float()
        assert torch.allclose(to_float_images(images, preprocess), expected, atol=1e-5)
    assert not torch.allclose(to_float_images(images, IMAGENET), to_float_images(images, _clip_like()), atol=1e-2)


def test_pair_batches_normalise_with_the_towers_preprocessing_and_check_its_size():
    import numpy as np

    from clipsearch.data.batches import PairBatches, TextBank, check_image_size, to_float_images
    from clipsearch.data.imageset import ImageTextSet
    from clipsearch.errors import InputError

    images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    data = ImageTextSet(images, [["a"], ["b"], ["c"], ["d"]], ["0", "1", "2", "3"])
    bank = TextBank.build(data.captions, lambda texts: {"input_ids": torch.arange(len(texts))[:, None]})
    batch = next(PairBatches(data, bank, 4, augment=False, preprocess=_clip_like()).epoch(torch.Generator()))
    assert torch.equal(batch.images, to_float_images(images[batch.index.numpy()], _clip_like()))
    with pytest.raises(InputError, match="data.image_size=8"):
        check_image_size(_clip_like(), 28)
