"""The written report in a real browser: headless Chromium opens report.html offline, every
figure renders (its div holds plotly's `main-svg`) and no JavaScript error is logged; the
PNGs kaleido wrote beside it are real, small pictures.

One report is written for the module: an experiment with the hand-made phase (plus
embeddings and a confusion matrix, as a classification run would leave) and an (lr, weight
decay) sweep, so that every kind of figure is on the page.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from clipsearch.report import write_experiment_report
from clipsearch.results import PNG_DIR

from .conftest import CONFIGS, CURVES, RANKS, STARTED, write_phase

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium on PATH (apt-get install chromium)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         # parcoords draws with WebGL: software rendering of this trusted local file
         "--enable-unsafe-swiftshader", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000"]


PHASE1_FIGURES = ("parallel_coordinates", "importance", "optimizer_vs_loss", "objective_by_optimizer",
                  "objective_by_loss", "progression", "best_vs_compute", "learning_curves", "slice", "contour",
                  "timeline", "tsne", "confusion_matrix")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    exp = tmp_path_factory.mktemp("results") / "exp"
    phase = write_phase(exp / "phase1", CURVES, CONFIGS, RANKS, errored={"t6"}, started=STARTED)
    rng = np.random.default_rng(0)
    np.savez(phase / "embeddings.npz", embeddings=rng.normal(size=(40, 8)) + np.repeat([0, 4], 20)[:, None],
             labels=np.repeat([0, 1], 20), class_names=np.array(["forest", "street"]))
    (phase / "confusion_matrix.json").write_text(json.dumps({"class_names": ["forest", "street"],
                                                             "matrix": [[18, 2], [3, 17]]}))
    sweep = {f"s{i}": [score] for i, score in enumerate([362.0, 906.7, 895.8, 865.8])}
    configs = {f"s{i}": {"optimizer.lr": lr, "optimizer.weight_decay": wd}
               for i, (lr, wd) in enumerate([(3e-5, 1e-4), (1e-6, 0.01), (1e-6, 0.1), (1e-7, 0.01)])}
    write_phase(exp / "sweep", sweep, configs, {"s1": 1, "s2": 2, "s3": 3, "s0": 4})
    write_experiment_report(exp, png=True)
    return exp


class PlotDivs(HTMLParser):
    """The id of every plotly div, and whether a `main-svg` was drawn inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered: dict[str, bool] = {}
        self._open: list[tuple[str, str | None]] = []   # (tag, plot id it belongs to)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        inside = self._open[-1][1] if self._open else None
        if "plotly-graph-div" in (attrs.get("class") or ""):
            inside = attrs["id"]
            self.rendered[inside] = False
        if inside and tag == "svg" and "main-svg" in (attrs.get("class") or ""):
            self.rendered[inside] = True
        if tag not in ("br", "img", "input", "meta", "link", "path", "rect", "line", "image", "stop", "use"):
            self._open.append((tag, inside))

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                break


def open_in_chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and the console lines that report an error."""
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    errors = [line for line in console if re.search(r"Uncaught|Error|ERROR:CONSOLE|WARNING:CONSOLE", line)]
    return done.stdout, errors


def test_every_figure_renders_without_a_javascript_error(experiment, tmp_path):
    dom, errors = open_in_chromium(experiment / "report.html", tmp_path / "profile")
    assert errors == []
    parser = PlotDivs()
    parser.feed(dom)
    expected = {f"fig-phase1-{name}" for name in PHASE1_FIGURES}
    # the sweep's trials stopped after one epoch of four: no complete trial for slice and contour
    expected |= {f"fig-sweep-{name}" for name in ("parallel_coordinates", "importance", "progression",
                                                  "best_vs_compute", "learning_curves", "timeline", "lr_wd_grid")}
    expected.add("fig-experiment-best_vs_compute")
    assert set(parser.rendered) == expected
    assert [div for div, drawn in parser.rendered.items() if not drawn] == []


def test_the_phase_page_holds_its_own_figures(experiment):
    # the same panels as the experiment page's section, which Chromium opened above
    text = (experiment / "phase1" / "report.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<div id="fig-phase1-[a-z_]+" class="plotly-graph-div"', text)) == len(PHASE1_FIGURES)
    assert text.count("plotly.js v") == 1


def test_pngs_are_small_pictures_of_every_figure(experiment):
    pngs = sorted(p.name for p in (experiment / "phase1" / PNG_DIR).glob("*.png"))
    assert pngs == sorted(f"{n}.png" for n in PHASE1_FIGURES)
    for png in (experiment / "phase1" / PNG_DIR).glob("*.png"):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 2_000 < len(data) < 300_000
    assert (experiment / "sweep" / PNG_DIR / "lr_wd_grid.png").is_file()
    assert (experiment / PNG_DIR / "best_vs_compute.png").is_file()  # the experiment's own figure
