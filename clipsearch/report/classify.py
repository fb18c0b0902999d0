"""The classification protocol's page: results/EXP/classify/report.html.

Seed 002's comparison table (from comparison.csv, which clipsearch.tune.classify writes), then
a section per method: its search (as any phase's report) with the t-SNE of its test embeddings
and its test confusion matrix (from the method folder's embeddings.npz and confusion_matrix.json).
"""

from __future__ import annotations

import csv
from pathlib import Path

from . import data as D
from . import html as H
from ..results import COMPARISON_CSV, PNG_DIR, REPORT_HTML, atomic_write_text
from .export import write_pngs
from .pages import build_phase, phase_body, phase_dirs, png_jobs, write_phase_files
from .sources import load_phase


def comparison_table(root: Path) -> D.Table:
    """comparison.csv as a Table (cells kept as written: the CSV is the record)."""
    with (root / COMPARISON_CSV).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    return D.Table(tuple(rows[0]), tuple(tuple(_number(c) for c in row) for row in rows[1:]))


def _number(cell: str):
    try:
        return float(cell) if any(ch in cell for ch in ".e") else int(cell)
    except ValueError:
        return cell


def write_classify_report(root: Path, png: bool = False) -> Path:
    """report.html of the protocol (and each method's own report, with its t-SNE and confusion)."""
    root = Path(root)
    reports = [build_phase(load_phase(d)) for d in phase_dirs(root)]
    for report in reports:
        write_phase_files(report)
    figures = H.FigureHtml()
    body = ["<h2>Comparison</h2>",
            H.note("Test accuracy: the supervised model's own classifier; the others: a logistic-regression "
                   "probe fitted on the frozen training-split embeddings. Models were selected on the validation "
                   "split's kNN accuracy; the test split was read only for these scores."),
            H.table(comparison_table(root))]
    for report in reports:
        body += [f'<h2 id="{H.esc(report.data.name)}">{H.esc(report.data.name)}</h2>', *phase_body(report, figures)]
    page = root / REPORT_HTML
    atomic_write_text(page, H.document(f"clipsearch classification protocol: {root.parent.name}", body))
    if png:
        write_pngs([job for r in reports for job in png_jobs(r)], [r.data.phase_dir / PNG_DIR for r in reports])
    return page
