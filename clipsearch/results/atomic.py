"""Writing a file so that no reader ever sees half of it: a temporary file beside the target,
renamed into place. The one way clipsearch writes a result, a cache entry or a checkpoint.

A writer that dies mid-write (killed, a full disk) leaves the previous file whole and no
temporary file behind; the error names the file the user knows, not the temporary one.
Concurrent writers of one target each write their own temporary file: the last rename wins.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write `path`'s content to, renamed to `path` when the block ends
    without an error and removed when it raises. For writers that need a path of their own
    (a memory-mapped array); `atomic_write` suits those that take a file object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        named = _naming(exc, tmp, path)
        if named is exc:
            raise
        raise named from exc
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; else what a failed write left


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(file)` into a temporary file opened for binary writing, then renamed to `path`;
    e.g. `atomic_write(path, lambda file: torch.save(obj, file))`. A file object rather than a
    path: torch then keeps the OSError of a failed write, and np.savez adds no suffix."""
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        write(file)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda file: file.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _temp_path(path: Path) -> Path:
    # hidden, unique per writer (process and call), never a name a reader looks for; it ends as
    # the target does, so a writer that adds a missing suffix (np.save) keeps this name
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")


def _naming(exc: BaseException, tmp: Path, path: Path) -> BaseException:
    """A failed write's error as an OSError naming `path` (the file the user knows), or `exc`
    itself when it is no file-system error or names another file."""
    cause = exc
    if isinstance(exc, RuntimeError) and isinstance(exc.__context__, OSError):
        cause = exc.__context__  # torch reports a full disk as an internal "unexpected pos"
    if isinstance(cause, OSError) and cause.filename in (None, str(tmp)):
        return OSError(cause.errno, cause.strerror, str(path))
    return exc
