"""Errors meant for people.

`InputError` is raised for anything the user can fix (a bad config key, a missing file, an
unknown name). The CLI prints its one-line message and exits with code 2; nothing else should
catch it. Every message says where (file, key), what is wrong, and how to fix it.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: a config, search space, data file or argument the user must fix."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            parts.append(f"fix: {self.fix}")
        # one line, whatever a library's message held (tarfile's lists its attempts line by line)
        return " ".join("; ".join(parts).split())
