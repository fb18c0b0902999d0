"""The reliability bench's bookkeeping: how the census files its cases (by their census marker),
how an earlier file's sections are kept (the kill loop's and the soak's: test_kill_loop.py,
test_soak.py)."""

import collections
import json
from pathlib import Path

import pytest

from clipsearch.bench import reliability
from clipsearch.bench.reliability import _previous_sections, census_categories, run_census

REPO = Path(__file__).resolve().parents[2]

SAMPLE = """import pytest

@pytest.mark.census("disk full")
def test_renamed_at_will():
    pass

@pytest.mark.parametrize("case", [pytest.param("a", marks=pytest.mark.census("security")),
                                  pytest.param("b", marks=pytest.mark.census("bad input: config"))])
def test_cases(case):
    assert case == "a"

@pytest.mark.census("disk full")
def test_skipped():
    pytest.skip("not on this machine")

def test_not_a_case():
    pass
"""


def _census_of(tmp_path, monkeypatch, text):
    (tmp_path / "test_sample.py").write_text(text)
    monkeypatch.setattr(reliability, "CENSUS_TESTS", ["test_sample.py"])
    return run_census(tmp_path)


def test_cases_are_filed_by_their_marker_and_failures_are_lost(tmp_path, monkeypatch):
    cases = _census_of(tmp_path, monkeypatch, SAMPLE)
    assert [(c["id"].split("::")[1], c["category"], c["outcome"]) for c in cases] == [
        ("test_renamed_at_will", "disk full", "passed"), ("test_cases[a]", "security", "passed"),
        ("test_cases[b]", "bad input: config", "failed")]  # skipped and unmarked tests are no cases
    categories = census_categories(cases)
    assert list(categories) == ["disk full", "security", "bad input: config"]
    assert categories["bad input: config"] == {"tried": 1, "passed": 0, "lost": 1,
                                               "failed_cases": ["test_sample.py::test_cases[b]"]}


def test_a_census_marker_without_a_category_stops_the_census(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="the census did not run"):
        _census_of(tmp_path, monkeypatch, "import pytest\n\n@pytest.mark.census\ndef test_x():\n    pass\n")


def test_the_census_holds_the_published_cases_in_each_category():
    """The marked tests, collected, give the tried counts results/benchmarks/reliability.json
    publishes: a test renamed changes nothing; one added or re-filed means rerunning the census
    (clipsearch bench reliability --kills 0)."""
    published = json.loads((REPO / "results" / "benchmarks" / "reliability.json").read_text())
    tried = {name: row["tried"] for name, row in published["sections"]["census"]["categories"].items()}
    collected = collections.Counter(case["category"] for case in run_census(REPO, collect_only=True))
    assert collected == tried


def test_a_file_without_sections_is_split_into_census_and_kill_loop(tmp_path):
    old = {"environment": {"date": "D"}, "command": "C", "kill_loop": {"lost": 0},
           "categories": {"security": {"tried": 3}, "worker killed mid-epoch (bench)": {"tried": 1}}}
    (tmp_path / "reliability.json").write_text(json.dumps(old))
    sections = _previous_sections(tmp_path / "reliability.json")
    assert sections["census"] == {"categories": {"security": {"tried": 3}}, "run": {"date": "D", "command": "C"}}
    assert sections["kill loop"]["kill_loop"] == {"lost": 0} and "soak" not in sections
