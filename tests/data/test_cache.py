"""The decoded-image cache: decoding rules, cache hits and invalidation, corrupt images."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from clipsearch.data import cache
from clipsearch.data.cache import decode_image, decode_images
from clipsearch.data.imageset import ImageTextSet
from clipsearch.errors import InputError

S = 8


def save(path, mode="RGB", size=(12, 10), color=(200, 30, 60), fmt=None):
    Image.new(mode, size, color).save(path, format=fmt)
    return str(path)


def truncated_jpeg(path):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[:200])
    return str(path)


@pytest.fixture
def decode_calls(monkeypatch):
    """Counts calls of decode_image made by decode_images."""
    calls = []

    def counting(source, image_size):
        calls.append(source)
        return decode_image(source, image_size)

    monkeypatch.setattr(cache, "decode_image", counting)
    return calls


def files_in(folder):
    """What a folder holds; a folder a failed run removed (or never made) holds nothing."""
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# --------------------------------------------------------------------------- decoding rules


def test_solid_colour_stays_that_colour_after_resize_and_crop(tmp_path):
    image = decode_image(save(tmp_path / "a.png", size=(37, 19)), S)
    assert image.shape == (S, S, 3) and image.dtype == np.uint8
    assert (image == (200, 30, 60)).all()


def test_wide_image_is_resized_by_its_shorter_side_and_centre_cropped(tmp_path):
    bands = np.zeros((10, 30, 3), np.uint8)
    bands[:, :10], bands[:, 10:20], bands[:, 20:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    Image.fromarray(bands).save(tmp_path / "bands.png")
    image = decode_image(str(tmp_path / "bands.png"), S).astype(int)
    # 30x10 -> 24x8, centre 8 columns = the middle (green) band; bicubic blurs its edges
    assert np.abs(image[:, 2:6] - (0, 255, 0)).max() <= 3


@pytest.mark.parametrize(
    "mode, color, expected",
    [
        ("L", 100, (100, 100, 100)),
        ("LA", (100, 255), (100, 100, 100)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),  # transparent shows as white
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("I;16", 40000, (156, 156, 156)),  # 16-bit scaled, not clipped to white
    ],
)
@pytest.mark.parametrize("size", [(5, 9), (40, 16)])
def test_any_mode_and_size_becomes_rgb_uint8_of_the_same_colour(tmp_path, mode, color, expected,
                                                               size):
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    path = save(tmp_path / f"x.{fmt.lower()}", mode, size, color, fmt)
    image = decode_image(path, S)
    assert image.shape == (S, S, 3) and image.dtype == np.uint8
    assert (image == expected).all()


def test_palette_image_decodes_to_its_palette_colour(tmp_path):
    image = Image.new("RGB", (9, 6), (0, 120, 240)).quantize(colors=4)
    assert image.mode == "P"
    image.save(tmp_path / "p.png")
    assert (decode_image(str(tmp_path / "p.png"), S) == (0, 120, 240)).all()


def test_exif_orientation_is_applied(tmp_path):
    halves = np.zeros((10, 20, 3), np.uint8)
    halves[:, :10], halves[:, 10:] = (255, 0, 0), (0, 0, 255)  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    Image.fromarray(halves).save(tmp_path / "o.jpg", exif=exif, quality=95)
    image = decode_image(str(tmp_path / "o.jpg"), 10).astype(int)
    # upright it is 10 wide, 20 tall, red on top: the centre crop's top row is red
    assert np.abs(image[0] - (255, 0, 0)).max() < 40
    assert np.abs(image[-1] - (0, 0, 255)).max() < 40


# --------------------------------------------------------------------------- the cache


def test_second_call_loads_the_cache_without_decoding(tmp_path, decode_calls):
    paths = [save(tmp_path / f"{i}.png", color=(i * 40, 0, 0)) for i in range(4)]
    first = decode_images(paths, S, tmp_path / "cache", progress=False)
    assert len(decode_calls) == 4
    second = decode_images(paths, S, tmp_path / "cache", progress=False)
    assert len(decode_calls) == 4
    assert isinstance(second.images, np.memmap)
    np.testing.assert_array_equal(first.images, second.images)
    assert [int(second.images[i, 0, 0, 0]) for i in range(4)] == [0, 40, 80, 120]


def test_changed_file_is_decoded_again_not_served_stale(tmp_path, decode_calls):
    paths = [save(tmp_path / "a.png", color=(1, 2, 3)), save(tmp_path / "b.png")]
    decode_images(paths, S, tmp_path / "cache", progress=False)
    save(tmp_path / "a.png", color=(9, 9, 9))
    stat = os.stat(paths[0])
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse-clock safe
    again = decode_images(paths, S, tmp_path / "cache", progress=False)
    assert len(decode_calls) == 4
    assert (again.images[0] == 9).all()


def test_touching_a_file_invalidates_the_cache(tmp_path, decode_calls):
    paths = [save(tmp_path / "a.png")]
    decode_images(paths, S, tmp_path / "cache", progress=False)
    os.utime(paths[0], ns=(0, os.stat(paths[0]).st_mtime_ns + 10**9))
    decode_images(paths, S, tmp_path / "cache", progress=False)
    assert len(decode_calls) == 2


def test_other_image_size_is_another_cache_entry(tmp_path):
    paths = [save(tmp_path / "a.png")]
    assert decode_images(paths, 4, tmp_path / "c", progress=False).images.shape == (1, 4, 4, 3)
    assert decode_images(paths, 6, tmp_path / "c", progress=False).images.shape == (1, 6, 6, 3)


def test_success_leaves_only_the_data_and_its_record(tmp_path):
    paths = [save(tmp_path / f"{i}.png") for i in range(3)]
    decode_images(paths, S, tmp_path / "cache", progress=False)
    key = cache.cache_key(paths, S)
    assert files_in(tmp_path / "cache") == [f"{key}.json", f"{key}.npy"]


def test_interrupted_decode_leaves_nothing_a_later_run_takes_as_complete(tmp_path, monkeypatch):
    paths = [save(tmp_path / f"{i}.png", color=(50, 50, 50)) for i in range(5)]

    class Crash(BaseException):
        """Stands for a kill mid-write: not an image problem, so it is never skipped."""

    def crash(source, image_size):
        raise Crash

    monkeypatch.setattr(cache, "decode_image", crash)
    with pytest.raises(Crash):
        decode_images(paths, S, tmp_path / "cache", progress=False, workers=1)
    assert files_in(tmp_path / "cache") == []
    monkeypatch.setattr(cache, "decode_image", decode_image)
    assert (decode_images(paths, S, tmp_path / "cache", progress=False).images == 50).all()


def test_leftover_temp_file_of_a_killed_run_is_not_loaded(tmp_path):
    paths = [save(tmp_path / "a.png", color=(70, 70, 70))]
    (tmp_path / "cache").mkdir()
    key = cache.cache_key(paths, S)
    partial = np.lib.format.open_memmap(tmp_path / "cache" / f".{key}.1.ab.tmp.npy", "w+",
                                        np.uint8, (1, S, S, 3))
    del partial  # all zeros, as a run killed before decoding would leave it
    assert (decode_images(paths, S, tmp_path / "cache", progress=False).images == 70).all()


def test_bytes_sources_are_cached_by_content(tmp_path, decode_calls):
    def png(color):
        buffer = io.BytesIO()
        Image.new("RGB", (9, 9), color).save(buffer, "PNG")
        return buffer.getvalue()

    decode_images([("k1", png((1, 1, 1)))], S, tmp_path / "c", progress=False)
    decode_images([("k1", png((1, 1, 1)))], S, tmp_path / "c", progress=False)
    assert len(decode_calls) == 1
    changed = decode_images([("k1", png((5, 5, 5)))], S, tmp_path / "c", progress=False)
    assert len(decode_calls) == 2 and (changed.images == 5).all()


# --------------------------------------------------------------------------- corrupt images


def test_corrupt_jpeg_in_error_mode_names_the_file_and_the_skip_option(tmp_path):
    paths = [save(tmp_path / "good.png"), truncated_jpeg(tmp_path / "broken.jpg")]
    with pytest.raises(InputError) as raised:
        decode_images(paths, S, tmp_path / "cache", progress=False)
    message = str(raised.value)
    assert "broken.jpg" in message and "--set data.on_corrupt=skip" in message
    assert files_in(tmp_path / "cache") == []


def test_corrupt_images_are_skipped_counted_and_named_in_skip_mode(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    paths = [save(tmp_path / "a.png", color=(1, 1, 1)), truncated_jpeg(tmp_path / "b.jpg"),
             str(tmp_path / "text.png"), save(tmp_path / "d.png", color=(4, 4, 4))]
    with pytest.warns(UserWarning, match="skipped 2 of 4 images"):
        result = decode_images(paths, S, tmp_path / "cache", on_corrupt="skip", progress=False)
    assert result.kept.tolist() == [0, 3]
    assert result.skipped == [paths[1], paths[2]]
    assert result.images.shape == (2, S, S, 3)
    assert (result.images[0] == 1).all() and (result.images[1] == 4).all()


def test_cached_skips_are_reported_again_and_refused_in_error_mode(tmp_path, decode_calls):
    paths = [save(tmp_path / "a.png"), truncated_jpeg(tmp_path / "b.jpg")]
    with pytest.warns(UserWarning):
        decode_images(paths, S, tmp_path / "cache", on_corrupt="skip", progress=False)
    with pytest.warns(UserWarning, match="skipped 1 of 2"):
        again = decode_images(paths, S, tmp_path / "cache", on_corrupt="skip", progress=False)
    assert len(decode_calls) == 2 and again.skipped == [paths[1]]
    with pytest.raises(InputError, match="b.jpg"):
        decode_images(paths, S, tmp_path / "cache", on_corrupt="error", progress=False)


def test_unknown_on_corrupt_value_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="data.on_corrupt"):
        decode_images([save(tmp_path / "a.png")], S, tmp_path / "c", on_corrupt="ignore")


# --------------------------------------------------------------------------- ImageTextSet


def image_set(tmp_path, n=6):
    paths = [save(tmp_path / f"{i}.png", color=(i, i, i)) for i in range(n)]
    decoded = decode_images(paths, S, tmp_path / "cache", progress=False)
    return ImageTextSet(decoded.images, [[f"c{i}"] for i in range(n)], [f"n{i}" for i in range(n)],
                        labels=np.arange(n, dtype=np.int64))


def test_subset_of_a_range_keeps_the_memmap_lazy(tmp_path):
    part = image_set(tmp_path).subset(np.arange(1, 6, 2))
    assert isinstance(part.images, np.memmap)
    assert part.images[:, 0, 0, 0].tolist() == [1, 3, 5] and part.names == ["n1", "n3", "n5"]


def test_subset_in_any_order_keeps_images_captions_and_labels_together(tmp_path):
    part = image_set(tmp_path).subset(np.array([4, 0, 2]))
    assert part.images[:, 0, 0, 0].tolist() == [4, 0, 2]
    assert part.captions == [["c4"], ["c0"], ["c2"]] and part.labels.tolist() == [4, 0, 2]
    assert len(part) == 3


def test_cached_arrays_are_built_once_then_read_from_disk(tmp_path):
    from clipsearch.data.cache import cached_arrays

    builds = []

    def build():
        builds.append(1)
        return {"x": np.arange(6, dtype=np.uint8).reshape(2, 3)}

    first = cached_arrays(tmp_path, "thing-v1", build)
    second = cached_arrays(tmp_path, "thing-v1", build)
    assert len(builds) == 1 and np.array_equal(first["x"], second["x"]) and second["x"].dtype == np.uint8
    assert [p.name for p in tmp_path.iterdir()] == ["thing-v1.npz"]


def test_a_cut_cached_array_file_is_built_again(tmp_path):
    from clipsearch.data.cache import cached_arrays

    (tmp_path / "thing-v1.npz").write_bytes(b"PK\x03\x04 cut short")
    out = cached_arrays(tmp_path, "thing-v1", lambda: {"x": np.ones(3)})
    assert np.array_equal(out["x"], np.ones(3))
    assert np.array_equal(cached_arrays(tmp_path, "thing-v1", lambda: {"x": np.zeros(3)})["x"], np.ones(3))
