"""Reports of a search: report.html (plotly, opens offline), importance.json, PNGs.

- data: what each figure plots, extracted from trials.csv and per-epoch histories (pure)
- importance: fANOVA and PED-ANOVA through Optuna, at an epoch every compared trial reached
- figures: the plotly figures, drawn from data's output
- html: the page (plotly.js inlined once)
- sources: reading a phase folder (trials.csv, best.json, phase.json, the per-trial histories)
- pages: a phase's report and an experiment's; export: PNGs; to_mlflow: the parent run's artifacts

Entry points: `write_phase_report(phase_dir)`, `write_experiment_report(exp_dir)`,
`report_command(path)` (the `clipsearch report` command), and `report_after_run(path)` (what
the CLI hands each phase as its `after_phase` hook, called when the phase ends, and calls itself
once the protocol has run every phase). The files are read through clipsearch.results only;
nothing here imports tune or Ray.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import InputError
from .sources import is_phase

#: "0" turns off the PNG copies of the report a search ends with (a headless node without
#: Chromium, the test suite); `clipsearch report` and the Python API still write them
PNG_ENV = "CLIPSEARCH_REPORT_PNG"

__all__ = ["write_phase_report", "write_experiment_report", "report_command", "report_after_run",
           "log_phase_report"]


def write_phase_report(phase_dir: Path, png: bool = True) -> Path:
    """results/EXP/PHASE/report.html, importance.json and (with png) report_png/*.png."""
    from .pages import write_phase_report as write

    return write(Path(phase_dir), png=png)


def write_experiment_report(exp_dir: Path, png: bool = True, phase_pngs: bool = True) -> Path:
    """results/EXP/report.html (a section per phase) and every phase's own report files."""
    from .pages import write_experiment_report as write

    return write(Path(exp_dir), png=png, phase_pngs=phase_pngs)


def log_phase_report(phase_dir: Path) -> str | None:
    """The phase's report files as artifacts of the MLflow parent run phase.json names."""
    from .to_mlflow import log_phase_report as log

    return log(Path(phase_dir))


def report_command(path: Path) -> Path:
    """`clipsearch report results/EXP[/PHASE]`: the report of a phase (a folder holding
    trials.csv) or of an experiment (a folder of such folders); returns the page written."""
    from .pages import phase_dirs

    path = Path(path)
    if is_phase(path):
        return write_phase_report(path)
    if phase_dirs(path):
        return write_experiment_report(path)
    what = ("does not exist" if not path.exists()
            else "is not an experiment or a phase: no trials.csv in it or its sub-folders")
    raise InputError(what, where=str(path), fix="give results/EXP or results/EXP/PHASE of a search that has run")


def report_after_run(path: Path) -> Path | None:
    """The report of a phase that has just ended (logged to its MLflow parent run), or of an
    experiment whose protocol has; the page written, or None.

    A report that fails must not fail the search it describes (hours of trials are already
    safe in trials.csv): the error becomes one line on stderr, and `clipsearch report` can
    build the report again later. With CLIPSEARCH_REPORT_PNG=0 it writes no PNG copies of the
    figures (each report pays some 3-10 s of Chromium for them; report.html holds every figure).
    """
    path = Path(path)
    png = os.environ.get(PNG_ENV, "1") != "0"
    try:
        if not is_phase(path):
            # each phase's report wrote its PNGs when the phase ended: only the experiment's own
            return write_experiment_report(path, png=png, phase_pngs=False)
        page = write_phase_report(path, png=png)
        log_phase_report(path)
        return page
    except Exception as exc:  # noqa: BLE001 - see the docstring
        print(f"{path.name}: report not written ({exc.__class__.__name__}: {exc}); "
              f"rebuild it with `clipsearch report {path}`", file=sys.stderr)
        return None
