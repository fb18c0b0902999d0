"""PNG copies of a report's figures (kaleido, which drives a Chromium found on PATH).

PNGs are a convenience beside report.html: when kaleido or its browser is missing or fails,
they are skipped with one warning and the report stands without them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

WIDTH = 900  # small files: a figure is a few tens of kB


class ReportWarning(UserWarning):
    """Something of a report was skipped; the report itself was written."""


def write_pngs(jobs: list[tuple[Any, Path]], folders: list[Path]) -> list[Path]:
    """Write each (figure, path) in one browser session; `folders` are emptied of PNGs first
    so that a figure no longer drawn leaves no stale picture behind."""
    for folder in folders:
        for old in folder.glob("*.png") if folder.is_dir() else ():
            old.unlink()
    if not jobs:
        return []
    import plotly.io as pio

    for _, path in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
    figures, paths = [f for f, _ in jobs], [p for _, p in jobs]
    try:
        pio.write_images(figures, paths, format="png", width=WIDTH, height=[f.layout.height for f in figures],
                         scale=1)
    except Exception as exc:  # noqa: BLE001 - whatever kaleido or the browser raise, the HTML stands
        warnings.warn(f"PNG export skipped ({exc.__class__.__name__}: {_first_line(exc)}); report.html is written. "
                      f"PNGs need kaleido and Chromium on PATH (apt-get install chromium)", ReportWarning,
                      stacklevel=2)
        return []
    return paths


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no message"
