"""One registry type for every named component: losses, optimizers, schedulers and the image
task's evaluators. An entry is looked up by the name a config gives; an unknown name is an
InputError that names the config key and lists what exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import InputError

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    """Entries by name. kind: what an entry is, for messages ("loss"); where: the config key
    that names one ("loss.name")."""

    def __init__(self, kind: str, where: str):
        self.kind, self.where = kind, where
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, entry: Entry) -> Entry:
        self._entries[name] = entry
        return entry

    def get(self, name: str, where: str | None = None) -> Entry:
        if name not in self._entries:
            raise InputError(f"unknown {self.kind} {name!r}", where=where or self.where,
                             fix=f"use one of: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        """The entries, in the order they were registered."""
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
