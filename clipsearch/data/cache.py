"""Decoded-image cache: decode and resize each image once, then memory-map it every epoch.

Decoding JPEGs and resizing them each epoch was the bottleneck one of our source reports
hit. `decode_images` decodes a list of sources (file paths, or (name, bytes) pairs from tar
shards) into one uint8 array of shape (N, S, S, 3) stored as `cache_dir/<key>.npy`, and on
later calls with the same inputs memory-maps that file without decoding anything.

Cache key: a hash of the cache format version, S, and every source in order: a path with
its absolute form, size and mtime (ns); a (name, bytes) pair with its name and a hash of its
bytes; or a caller's `fingerprint` (tar shards pass their shards' path, size and mtime so a
cache hit reads no image bytes). Editing, replacing or touching a file gives a new key.

Files per key: `<key>.json` (which sources were skipped as corrupt, and why) and `<key>.npy`.
Both are written atomically (clipsearch.results.atomic: a hidden temporary file in cache_dir,
renamed into place), the .json first: a run that dies mid-write leaves only a hidden
`.<key>.*.tmp*` file that no later run reads. Concurrent runs on the same inputs each write
their own temporary file; the last rename wins and both results are identical.

Image handling (`decode_image`): EXIF orientation applied; any mode (L, P, RGBA, CMYK,
16-bit, ...) to RGB, transparent pixels composited onto white; the shorter side resized to S
(bicubic), then the centre S x S crop.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from ..errors import InputError
from ..results import atomic_path, atomic_write, atomic_write_text

#: bump when decoding changes (resampling, crop, colour handling) so old caches are not reused
CACHE_FORMAT_VERSION = 1
ON_CORRUPT_CHOICES = ("error", "skip")
SKIP_FIX = "replace or remove the file, or pass --set data.on_corrupt=skip to skip corrupt images"

#: a file path, or (name, encoded bytes) for images that live inside another file
Source = Union[str, os.PathLike, tuple[str, bytes]]


class DecodedImages(NamedTuple):
    """What `decode_images` returns.

    images: uint8 (K, S, S, 3) read-only np.memmap, one row per kept source, in source order.
    kept: int64 (K,), the position in `sources` of each row.
    skipped: names of the sources dropped as corrupt (on_corrupt="skip"), in source order.
    """

    images: np.ndarray
    kept: np.ndarray
    skipped: list[str]


# --------------------------------------------------------------------------- one image


def decode_image(source: Source, image_size: int) -> np.ndarray:
    """Decode one image file or (name, bytes) pair to uint8 (S, S, 3) RGB.

    Raises whatever PIL raises for data it cannot decode (OSError, ValueError, ...).
    """
    with _open_image(source) as image:
        # JPEG only (a no-op otherwise): let libjpeg decode at 1/2, 1/4 or 1/8 scale while
        # both sides stay >= S; decoding a large photo this way is several times faster.
        image.draft(None, (image_size, image_size))
        image.load()
        image = _apply_exif_orientation(image)
        return _resize_center_crop(_to_rgb(image), image_size)


def _open_image(source: Source) -> Image.Image:
    if isinstance(source, tuple):
        return Image.open(io.BytesIO(source[1]))
    return Image.open(source)


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    # Phone photos are stored sideways with an EXIF flag; viewers (and captioners) see them
    # upright. A broken EXIF block must not lose an otherwise decodable image.
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - any EXIF parse failure means "no orientation"
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "I" or image.mode.startswith("I;16"):
        # PIL's convert clips 16-bit values at 255 (a white image); scale 0..65535 to 0..255.
        values = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        # Transparent pixels often hold black or garbage colour; show them as a viewer would.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def _resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


# --------------------------------------------------------------------------- many, cached


def decode_images(
    sources: Iterable[Source],
    image_size: int,
    cache_dir: str | os.PathLike,
    on_corrupt: str = "error",
    progress: bool = True,
    *,
    fingerprint: str | None = None,
    workers: int | None = None,
) -> DecodedImages:
    """Decode `sources` to uint8 (K, S, S, 3), or memory-map the cached result.

    sources: a sized iterable of file paths and/or (name, bytes) pairs; it is iterated once
        on a cache miss (and once more to hash it when `fingerprint` is None).
    on_corrupt: "error" raises InputError naming the first image that does not decode;
        "skip" drops such images, warns once with the count and lists them in `skipped`.
    fingerprint: a string that changes whenever the sources do, used instead of hashing them.
    workers: decoding threads (PIL releases the GIL while decoding and resizing).
    """
    _check_on_corrupt(on_corrupt)
    if not isinstance(sources, Sized):
        sources = list(sources)
    if len(sources) == 0:
        raise ValueError("decode_images needs at least one source")
    missing = _missing_folders(Path(cache_dir).expanduser())
    cache_dir = _ensure_cache_dir(cache_dir)
    key = cache_key(sources, image_size, fingerprint)
    result = _load_cached(cache_dir, key, image_size)
    if result is None:
        try:
            result = _decode_to_cache(sources, image_size, cache_dir, key, on_corrupt, progress,
                                      workers)
        except BaseException:
            _remove_if_empty(missing)  # bad input writes nothing: not even an empty cache folder
            raise
    if result.skipped:
        _handle_skipped(result, cache_dir / f"{key}.json", on_corrupt)
    return result


def cache_key(sources: Iterable[Source], image_size: int, fingerprint: str | None = None) -> str:
    """The cache file stem for these sources at this size (see the module docstring)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"clipsearch-decoded-images/v{CACHE_FORMAT_VERSION}/{image_size}\n".encode())
    if fingerprint is not None:
        digest.update(b"fingerprint\0" + fingerprint.encode())
    else:
        for source in sources:
            digest.update(_source_fingerprint(source))
    return digest.hexdigest()


def source_name(source: Source) -> str:
    """How messages name a source: its path, or the name of a (name, bytes) pair."""
    return source[0] if isinstance(source, tuple) else os.fspath(source)


def _source_fingerprint(source: Source) -> bytes:
    if isinstance(source, tuple):
        name, data = source
        return f"b\0{name}\0{hashlib.blake2b(data, digest_size=16).hexdigest()}\n".encode()
    path = os.path.abspath(source)
    try:
        stat = os.stat(path)
    except OSError:
        # Hashed as missing: decoding will report it, and once it appears the key changes.
        return f"p\0{path}\0missing\n".encode()
    return f"p\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()


def _check_on_corrupt(on_corrupt: str) -> None:
    if on_corrupt not in ON_CORRUPT_CHOICES:
        raise InputError(
            f"unknown value {on_corrupt!r}", where="data.on_corrupt",
            fix=f"use one of: {', '.join(ON_CORRUPT_CHOICES)}",
        )


def _missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another run wrote there meanwhile) or gone: leave it
            return


def _ensure_cache_dir(cache_dir: str | os.PathLike) -> Path:
    path = Path(cache_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create the decoded-image cache folder ({exc.strerror})", where=str(path),
            fix="point data.cache_dir at a writable folder",
        ) from None
    return path


def _load_cached(cache_dir: Path, key: str, image_size: int) -> DecodedImages | None:
    """The cached result for `key`, or None when it is absent or does not look complete."""
    meta_path, data_path = cache_dir / f"{key}.json", cache_dir / f"{key}.npy"
    if not (meta_path.is_file() and data_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        images = np.load(data_path, mmap_mode="r")
        kept = _kept_indices(meta["num_sources"], [i for i, _, _ in meta["skipped"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged by something outside clipsearch: decode again
    if images.dtype != np.uint8 or images.shape != (len(kept), image_size, image_size, 3):
        return None
    return DecodedImages(images, kept, [name for _, name, _ in meta["skipped"]])


def _decode_to_cache(
    sources: Sized, image_size: int, cache_dir: Path, key: str, on_corrupt: str,
    progress: bool, workers: int | None,
) -> DecodedImages:
    count = len(sources)
    _check_free_space(cache_dir, count * image_size * image_size * 3)
    with atomic_path(cache_dir / f"{key}.npy") as decoded:
        failures = _decode_to_file(sources, decoded, image_size, workers, progress, on_corrupt)
        meta = {"version": CACHE_FORMAT_VERSION, "image_size": image_size,
                "num_sources": count, "skipped": [list(f) for f in failures]}
        atomic_write_text(cache_dir / f"{key}.json", json.dumps(meta))
    result = _load_cached(cache_dir, key, image_size)
    assert result is not None, "a cache file just written must load"
    return result


def _decode_to_file(
    sources: Sized, path: Path, image_size: int, workers: int | None, progress: bool, on_corrupt: str,
) -> list[tuple[int, str, str]]:
    """Every source decoded into the .npy at `path`, less the images that failed; the failures."""
    count = len(sources)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, image_size, image_size, 3))
    failures = _decode_all(sources, out, image_size, workers, progress, on_corrupt)
    kept = _kept_indices(count, [i for i, _, _ in failures])
    if len(kept) == 0:
        raise InputError(
            f"none of the {count} images could be decoded (first: {failures[0][2]})",
            where=failures[0][1], fix="check that the files are images",
        )
    if failures:
        with atomic_path(path) as kept_only:
            _copy_rows(out, kept, kept_only)
            del out  # close the map before the rename (required on Windows, tidy elsewhere)
    else:
        out.flush()
        del out
    return failures


def _kept_indices(count: int, dropped: list[int]) -> np.ndarray:
    keep = np.ones(count, dtype=bool)
    keep[np.asarray(dropped, dtype=np.int64)] = False
    return np.flatnonzero(keep).astype(np.int64)


def _decode_all(
    sources: Iterable[Source], out: np.ndarray, image_size: int, workers: int | None,
    progress: bool, on_corrupt: str,
) -> list[tuple[int, str, str]]:
    """Decode each source into its row of `out`; the (index, name, reason) of each failure.

    At most a few tasks per thread are in flight, so (name, bytes) sources streamed from tar
    shards never all sit in memory at once.
    """
    workers = workers or min(32, os.cpu_count() or 1)
    failures: list[tuple[int, str, str]] = []
    pending: deque[tuple[int, str, Future]] = deque()
    bar = tqdm(total=len(out), desc=f"decoding images to {image_size}px", unit="img",
               # disable=None: no bar when stderr is not a terminal (logs, CI, Ray workers)
               file=sys.stderr, disable=None if progress else True, mininterval=1.0)
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        for index, source in enumerate(sources):
            future = pool.submit(_decode_into, source, out, index, image_size)
            pending.append((index, source_name(source), future))
            while len(pending) >= 4 * workers or (pending and pending[0][2].done()):
                _collect(pending.popleft(), failures, bar, on_corrupt)
        while pending:
            _collect(pending.popleft(), failures, bar, on_corrupt)
    return failures


def _decode_into(source: Source, out: np.ndarray, index: int, image_size: int) -> str | None:
    """Write the decoded image to out[index]; the reason it failed, or None."""
    try:
        out[index] = decode_image(source, image_size)
    except Exception as exc:  # noqa: BLE001 - PIL's plugins raise many types on bad data
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def _collect(item: tuple[int, str, Future], failures: list, bar: tqdm, on_corrupt: str) -> None:
    index, name, future = item
    reason = future.result()
    bar.update(1)
    if reason is None:
        return
    if on_corrupt == "error":
        raise _corrupt_error(name, reason)
    failures.append((index, name, reason))


def _corrupt_error(name: str, reason: str) -> InputError:
    return InputError(f"cannot decode this image ({reason})", where=name, fix=SKIP_FIX)


def _copy_rows(src: np.ndarray, rows: np.ndarray, path: Path, chunk: int = 1024) -> None:
    """A new .npy at `path` holding src[rows], copied a chunk at a time to bound memory."""
    dst = np.lib.format.open_memmap(path, mode="w+", dtype=src.dtype,
                                    shape=(len(rows),) + src.shape[1:])
    for start in range(0, len(rows), chunk):
        dst[start:start + chunk] = src[rows[start:start + chunk]]
    dst.flush()


def _handle_skipped(result: DecodedImages, meta_path: Path, on_corrupt: str) -> None:
    if on_corrupt == "error":
        # The cache was written by a skipping run; this run asked to stop on corrupt images.
        index, name, reason = json.loads(meta_path.read_text(encoding="utf-8"))["skipped"][0]
        raise _corrupt_error(name, reason)
    total = len(result.kept) + len(result.skipped)
    shown = ", ".join(result.skipped[:3]) + (", ..." if len(result.skipped) > 3 else "")
    warnings.warn(
        f"skipped {len(result.skipped)} of {total} images that could not be decoded: {shown}",
        stacklevel=3,
    )


def _check_free_space(cache_dir: Path, nbytes: int) -> None:
    # The memmap is a sparse file: running out of disk mid-decode would kill the process
    # with SIGBUS instead of raising, so refuse up front.
    free = shutil.disk_usage(cache_dir).free
    if nbytes > free:
        raise InputError(
            f"the decoded images need {nbytes / 2**30:.1f} GiB but only "
            f"{free / 2**30:.1f} GiB is free", where=str(cache_dir),
            fix="point data.cache_dir at a larger disk or lower the image size",
        )


def cached_arrays(cache_dir: str | os.PathLike, key: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays `build()` returns, kept as `cache_dir/<key>.npz` for the next process.

    For inputs that are costly to parse but small once parsed (the embedded data sets: ~2 s of
    CSV parsing per process, ~20 ms from the .npz), so that each trial's process does not pay
    it again. The key must name everything the arrays depend on. A cache that cannot be read is
    built again; one that cannot be written is skipped (it only saves time).
    """
    path = Path(cache_dir).expanduser() / f"{key}.npz"
    try:
        with np.load(path) as saved:
            return {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        pass  # absent, or cut short by a writer that died: build it again
    arrays = build()
    try:
        _ensure_cache_dir(path.parent)
        atomic_write(path, lambda file: np.savez(file, **arrays))
    except (OSError, InputError) as exc:
        print(f"clipsearch: not caching {key} in {path.parent}: {exc}", file=sys.stderr)
    return arrays
