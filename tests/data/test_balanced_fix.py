"""The balanced sampler's bad-input errors suggest settings that work when followed."""

from __future__ import annotations

import re

import numpy as np
import pytest

from clipsearch.data.imageset import ImageTextSet
from clipsearch.data.views import check_balanced
from clipsearch.errors import InputError

SETTING = re.compile(r"(train\.batch_size|image\.images_per_class)=(\d+)")


def labelled_set(counts: list[int]) -> ImageTextSet:
    labels = np.concatenate([[c] * n for c, n in enumerate(counts)]).astype(np.int64)
    images = np.zeros((len(labels), 8, 8, 3), dtype=np.uint8)
    return ImageTextSet(images, [["x"]] * len(labels), [str(i) for i in range(len(labels))], labels,
                        [str(c) for c in range(len(counts))])


def suggested_settings(fix: str, batch_size: int, n: int) -> list[tuple[int, int]]:
    """Each "or" alternative of a fix as the (batch_size, n) it leads to."""
    settings = []
    for option in fix.split(", or "):
        values = {"train.batch_size": batch_size, "image.images_per_class": n}
        values.update({key: int(value) for key, value in SETTING.findall(option)})
        settings.append((values["train.batch_size"], values["image.images_per_class"]))
    return settings


@pytest.mark.parametrize("counts, batch_size, n", [
    ([100, 100, 100], 64, 2),    # a 3-class folder at the defaults: k = 32 > 3 classes
    ([100, 100, 100], 64, 22),   # the old fix's n = 22 followed: 64 is not a multiple of 22
    ([100, 100, 100], 64, 3),
    ([10, 10, 10, 10], 64, 2),   # more images per batch than the split holds
    ([10, 10, 10], 64, 80),      # neither key alone can fix it
    ([5, 5, 5, 5], 7, 2),
    ([300] * 10, 64, 3),
])
def test_following_the_printed_fix_passes_every_check(counts, batch_size, n):
    data = labelled_set(counts)
    with pytest.raises(InputError) as caught:
        check_balanced(data, batch_size, n)
    settings = suggested_settings(caught.value.fix, batch_size, n)
    assert settings and all(setting != (batch_size, n) for setting in settings)
    for fixed_batch, fixed_n in settings:
        k = check_balanced(data, fixed_batch, fixed_n)
        assert k * fixed_n == fixed_batch and k >= 2


def test_the_three_class_fix_keeps_the_batch_size_or_the_images_per_class():
    with pytest.raises(InputError) as caught:
        check_balanced(labelled_set([100, 100, 100]), 64, 2)
    assert caught.value.where == "image.images_per_class"
    assert "image.images_per_class=32" in caught.value.fix and "train.batch_size=6" in caught.value.fix


def test_a_split_too_small_for_any_batch_says_so():
    with pytest.raises(InputError, match="at least 2 images"):
        check_balanced(labelled_set([1]), 64, 2)
