"""One driver per experiment: the lock a search command holds on results/EXP/driver.lock.

A second `clipsearch phase1 --name EXP` (or `--resume`, the protocol, a sweep) while a first
driver runs the experiment would resume the first one's trials under it, open a second MLflow
parent run and write the same phase.json: it is refused with one line (exit 2) before anything
is checked or written. The lock is taken in two steps:

- `check()`, first of all: if the lock file exists, the lock is taken (or the command refused)
  there and then. The file is never deleted, so a driver that is running has left it.
- `take()`, once every input is checked and before the first write: the experiment folder and
  the lock file are created if need be (a bad input writes nothing, not even these) and the
  lock taken; of two drivers that started together, the second is refused here.

Why flock(2) and not a pid file: the kernel drops the lock when the holder's last descriptor
closes, which a SIGKILL, an OOM kill or a crash do as surely as a clean exit, so a dead driver
never blocks the next one and nothing guesses whether a recorded pid is still the driver (pids
are reused; a driver on another host sharing results/ has no pid here). Linux emulates flock
with POSIX locks over NFS, so drivers on two hosts of one shared results/ folder exclude each
other too. The file is never unlinked: a driver deleting it on exit while another waits on the
old inode would let a third lock a new file, and two drivers would run. What the file holds
(pid, host, command) is only said in the refusal; nothing decides on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from ..results import DRIVER_LOCK


class ExperimentLock:
    """The lock of experiment folder `exp_dir` (results/EXP): see the module's docstring."""

    def __init__(self, exp_dir: Path):
        self.exp_dir = Path(exp_dir).resolve()  # named whole in the refusal, as the phase folders are
        self.path = self.exp_dir / DRIVER_LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def check(self) -> None:
        """Refuse now if another driver holds the experiment; hold it from here when the lock
        file exists (nothing is created)."""
        if not self.held and self.path.is_file():
            self._lock(os.O_RDWR)

    def take(self) -> None:
        """Hold the experiment before the first write, creating its folder and lock file."""
        if not self.held:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            self._lock(os.O_RDWR | os.O_CREAT)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock; the file stays
            self._fd = None

    def _lock(self, flags: int) -> None:
        fd = os.open(self.path, flags, 0o644)  # not inherited by the processes this one starts
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 500, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise InputError(f"another clipsearch driver is running experiment {self.exp_dir.name!r}"
                             + (f" ({holder})" if holder else ""), where=str(self.path),
                             fix="wait for it to end, or stop it (its lock goes with its process); to run "
                                 "beside it, choose another --name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {_command()}\n".encode(), 0)
        self._fd = fd


def _command() -> str:
    """The command's words without its options (whose values may hold a database password)."""
    words = []
    for arg in sys.argv[1:]:
        if arg.startswith("-"):
            break
        words.append(arg)
    return " ".join(["clipsearch", *words])[:100]


@contextlib.contextmanager
def experiment_lock(exp_dir: Path) -> Iterator[ExperimentLock]:
    """The experiment's lock for the block: checked on entry (refused: InputError), the
    caller's `take()` before its first write, released on exit (and by the kernel at death)."""
    lock = ExperimentLock(exp_dir)
    lock.check()
    try:
        yield lock
    finally:
        lock.release()
