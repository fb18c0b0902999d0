"""Where clipsearch keeps what it computes once per machine.

The parsed embedded sets, decoded images and a frozen text tower's outputs are content-keyed
(clipsearch.data.cache), so every run and every trial of a machine can share one folder. It is
an absolute path on purpose: a Ray trial runs in its own working directory, where a relative
default would be a new, empty cache for every trial.
"""

from __future__ import annotations

import os
from pathlib import Path


#: a folder of its own instead (the test suite's, so that it never writes into the user's cache)
CACHE_ENV = "CLIPSEARCH_CACHE_DIR"


def machine_cache_dir() -> str:
    """$CLIPSEARCH_CACHE_DIR, else $XDG_CACHE_HOME/clipsearch, else ~/.cache/clipsearch (the
    default of data.cache_dir)."""
    if os.environ.get(CACHE_ENV):
        return str(Path(os.environ[CACHE_ENV]).expanduser().absolute())
    return str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipsearch")
