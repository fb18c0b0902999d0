"""The reliability census's pytest plugin: each census case's category and outcome, as JSON.

A census case is a test marked `@pytest.mark.census("CATEGORY")` (a parametrized case carries
its own: `pytest.param(..., marks=pytest.mark.census("security"))`). The category is what the
published table files the case under: it is the marker's, not read from the test's name, so a
renamed test stays where it was. `clipsearch bench reliability` runs pytest with
`-p clipsearch.bench.census --census-json PATH -m census`; PATH then holds one
{"id", "category", "outcome"} per case, in the order pytest ran them (outcome: passed, failed,
skipped, or null for a case that did not run, as with --collect-only).
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER = "census"


def pytest_addoption(parser) -> None:
    parser.addoption("--census-json", default=None, metavar="PATH",
                     help="write each census case's category and outcome to PATH (clipsearch bench reliability)")


def pytest_configure(config) -> None:
    # clipsearch's pyproject.toml registers the marker too; this keeps the plugin whole anywhere
    config.addinivalue_line("markers", f"{MARKER}(category): a case of the reliability census, filed under CATEGORY")
    path = config.getoption("census_json")
    if path:
        config.pluginmanager.register(CensusRecorder(Path(path)), "clipsearch-census")


def category_of(item) -> str | None:
    """The case's census category, None for a test outside the census."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str) or not marker.args[0]:
        import pytest  # only ever called inside pytest; the module itself needs no pytest

        raise pytest.UsageError(f"{item.nodeid}: the census marker takes one category, "
                                f"e.g. @pytest.mark.census(\"disk full\"), got {marker.args!r}")
    return marker.args[0]


class CensusRecorder:
    def __init__(self, path: Path):
        self.path = path
        self.cases: dict[str, dict] = {}

    def pytest_collection_finish(self, session) -> None:
        for item in session.items:  # what is left after -m and -k
            category = category_of(item)
            if category is not None:
                self.cases[item.nodeid] = {"id": item.nodeid, "category": category, "outcome": None}

    def pytest_runtest_logreport(self, report) -> None:
        case = self.cases.get(report.nodeid)
        if case is None:
            return
        # a failure in setup, call or teardown fails the case; a skip counts only if nothing failed
        if report.failed:
            case["outcome"] = "failed"
        elif report.skipped and case["outcome"] != "failed":
            case["outcome"] = "skipped"
        elif report.when == "call" and case["outcome"] is None:
            case["outcome"] = "passed"

    def pytest_sessionfinish(self, session) -> None:
        self.path.write_text(json.dumps(list(self.cases.values()), indent=1) + "\n", encoding="utf-8")
