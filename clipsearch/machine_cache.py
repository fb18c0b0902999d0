"""Where clipsearch keeps what it computes once per machine.

The parsed embedded sets, decoded images and a frozen text tower's outputs are content-keyed
(clipsearch.data.cache), so every run and every trial of a machine can share one folder. It is
an absolute path on purpose: a Ray trial runs in its own working directory, where a relative
default would be a new, empty cache for every trial.
"""

from __future__ import annotations

import os
from pathlib import Path


def machine_cache_dir() -> str:
    """$XDG_CACHE_HOME/clipsearch, else ~/.cache/clipsearch (the default of data.cache_dir)."""
    return str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipsearch")
