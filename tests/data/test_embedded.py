"""The embedded digits: sizes, fixed split, nested deterministic subsets, truthful captions."""

import numpy as np
import pytest

from clipsearch.data import embedded as E


@pytest.fixture(scope="module")
def splits():
    return E.mnist_splits(28)


def test_split_sizes_and_balance(splits):
    train, val = splits
    assert len(train) == 4000 and len(val) == 1000
    assert np.bincount(val.labels).tolist() == [100] * 10
    assert not set(train.names) & set(val.names)


def test_split_is_deterministic(splits):
    train2, val2 = E.mnist_splits(28)
    assert train2.names == splits[0].names and np.array_equal(val2.images, splits[1].images)


def test_fraction_subsets_are_stratified_nested_and_deterministic(splits):
    train = splits[0]
    fifth = E.subset_fraction(train, 0.2)
    half = E.subset_fraction(train, 0.5)
    assert len(fifth) == 800 and np.bincount(fifth.labels).tolist() == [80] * 10
    assert set(fifth.names) <= set(half.names)
    assert E.subset_fraction(train, 0.2).names == fifth.names


def test_every_image_has_five_captions_naming_its_digit(splits):
    for data in splits:
        for caps, label in zip(data.captions, data.labels):
            assert len(caps) == 5
            assert all(E.DIGIT_WORDS[label] in c or str(label) in c for c in caps)


def test_captions_are_true_to_measured_properties(splits):
    """An image called 'very thick' is measurably thicker than one called 'very thin', and so on."""
    train = splits[0]
    gray = train.images[..., 0] / 255.0
    props = [E.measure(g) for g in gray]
    full = [caps[0] for caps in train.captions]

    def mean_of(attr, word):
        values = [getattr(p, attr) for p, c in zip(props, full) if f"a {word} handwritten" in c or f", {word} and" in c
                  or f", {word}," in c]
        assert len(values) > 50, word
        return np.mean(values)

    assert mean_of("thickness", "very thick") > mean_of("thickness", "very thin") + 0.5
    assert mean_of("slant", "leaning far right") > mean_of("slant", "leaning far left") + 0.3
    assert mean_of("width", "very wide") > mean_of("width", "very narrow") + 4
    loops_words = {"no closed loop": 0, "one closed loop": 1, "two closed loops": 2}
    for p, c in zip(props, full):
        said = next(v for k, v in loops_words.items() if c.endswith(k))
        assert said == min(p.loops, 2)


def test_retrieval_is_neither_trivial_nor_degenerate(splits):
    """Many validation images have a caption no other image shares (retrieval is possible),
    but many share their full description (it is not trivial)."""
    val = splits[1]
    from collections import Counter

    counts = Counter(c for caps in val.captions for c in caps)
    with_unique = np.mean([any(counts[c] == 1 for c in caps) for caps in val.captions])
    assert 0.4 < with_unique < 0.9


def test_zero_shot_domain_is_the_8x8_digits():
    digits = E.sklearn_digits(28)
    assert len(digits) == 1797 and digits.images.shape == (1797, 28, 28, 3)
    assert digits.class_names == E.DIGIT_WORDS


def test_the_cached_measurements_are_the_measurements(tmp_path, monkeypatch):
    gray, _ = E.load_mnist()
    measured = [E.measure(d) for d in gray]
    monkeypatch.setattr(E, "embedded_cache_dir", lambda: tmp_path)
    assert E.measured_properties(gray) == measured  # measured, then kept in tmp_path
    assert list(tmp_path.glob("embedded-mnist5000-properties-*.npz"))
    monkeypatch.setattr(E, "measure", lambda digit: pytest.fail("measured again instead of read from the cache"))
    read = E.measured_properties(gray)
    assert read == measured and all(type(p.width) is int and type(p.slant) is float for p in read)


@pytest.mark.parametrize("size", [28, 32])
def test_rgb_images_at_the_native_size_are_the_resizers_bytes(size):
    from PIL import Image

    gray = np.random.default_rng(0).random((5, 28, 28), dtype=np.float32)
    rgb = E._to_rgb(gray, size)
    for img, out in zip(gray, rgb):
        pil = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8), mode="L")
        expected = np.asarray(pil if size == 28 else pil.resize((size, size), Image.BILINEAR))
        assert out.shape == (size, size, 3) and all(np.array_equal(out[..., c], expected) for c in range(3))
