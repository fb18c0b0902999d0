"""`clipsearch bench reliability`: faults survived and bad inputs tried, counted from an actual run.

Two sources, both run here, never copied from elsewhere:
- the census: the quick fault and bad-input tests (those CI runs), run with pytest and counted
  case by case from its JUnit report, each case filed under a category;
- the kill loop (clipsearch.tune.reliability): a quick phase 1 whose driver is SIGKILLed at
  random moments and resumed, and a trial worker killed mid-epoch.
Writes OUT/reliability.json and OUT/reliability.md: per category, cases tried, passed, and what
was lost (failed cases, trials lost or repeated, half-written files, runs left open).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

from .common import environment, write_result

#: the quick tests of the census, each case filed by the first rule its test id matches
CENSUS_TESTS = ["tests/test_bad_input.py", "tests/test_reliability.py",
                "tests/test_train.py::test_non_finite_loss_stops_training_at_once"]
CATEGORY_RULES = [("python tag", "security"), ("refused", "security"), ("test_bad_input", "bad input"),
                  ("full_disk", "disk full")]


def run_reliability_benchmark(out_dir: Path, kills: int, trials: int, census: bool, seed: int) -> Path:
    categories: dict[str, dict] = {}
    if census:
        for case in run_census(Path.cwd()):
            row = categories.setdefault(case["category"], {"tried": 0, "passed": 0, "lost": 0, "failed_cases": []})
            row["tried"] += 1
            row["passed"] += case["passed"]
            if not case["passed"]:
                row["lost"] += 1
                row["failed_cases"].append(case["id"])
    kill_loop = None
    if kills:
        from ..tune.reliability import run_kill_loop

        loop = run_kill_loop(kills=kills, trials=trials, seed=seed)
        kill_loop = {**asdict(loop), "lost": loop.lost}
        categories["driver killed + --resume (bench)"] = {
            "tried": loop.kills_done, "passed": loop.kills_done if loop.lost == 0 and loop.final_exit_code == 0 else 0,
            "lost": loop.lost, "failed_cases": loop.notes}
        categories["worker killed mid-epoch (bench)"] = {
            "tried": loop.worker_kills,
            "passed": loop.worker_kills if loop.lost == 0 and loop.final_exit_code == 0 else 0,
            "lost": loop.lost if loop.worker_kills else 0, "failed_cases": []}
    result = {"environment": environment(), "command": _command(kills, trials, census, seed),
              "categories": categories, "kill_loop": kill_loop,
              "totals": {k: sum(c[k] for c in categories.values()) for k in ("tried", "passed", "lost")}}
    rows = [(name, c["tried"], c["passed"], c["lost"]) for name, c in categories.items()]
    rows.append(("**total**", *result["totals"].values()))
    return write_result(out_dir, "reliability", result, rows, ("category", "tried", "passed", "lost"))


def _command(kills: int, trials: int, census: bool, seed: int) -> str:
    return (f"clipsearch bench reliability --kills {kills} --trials {trials} --seed {seed}"
            + ("" if census else " --no-census"))


def run_census(repo: Path) -> list[dict]:
    """Run the census tests with pytest; one {id, category, passed} per test case."""
    missing = [t for t in CENSUS_TESTS if not (repo / t.split("::")[0]).exists()]
    if missing:
        from ..errors import InputError

        raise InputError(f"the census tests are not here: {', '.join(missing)}", where=str(repo),
                         fix="run clipsearch bench reliability from a clipsearch checkout (the repository root)")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        *CENSUS_TESTS], cwd=repo, env=env, stdout=subprocess.DEVNULL, check=False)
        return [_case(tc) for tc in ET.parse(report).iter("testcase")
                if tc.find("skipped") is None and tc.get("name") not in NOT_CASES]


def _case(testcase: ET.Element) -> dict:
    case_id = f"{testcase.get('classname')}::{testcase.get('name')}"
    passed = testcase.find("failure") is None and testcase.find("error") is None
    return {"id": case_id, "category": categorize(case_id), "passed": passed}


#: tests of the census that check the census itself, not a fault
NOT_CASES = {"test_the_census_has_at_least_40_cases_in_every_category"}
#: a bad-input case id starts with its kind ("space: file missing")
BAD_INPUT_KINDS = {"space": "search space", "config": "config", "data": "data file", "cli": "argument"}


def categorize(case_id: str) -> str:
    """The first rule whose text is in the test id (bad input by kind); the rest is trial faults."""
    lowered = case_id.lower()
    category = next((category for needle, category in CATEGORY_RULES if needle in lowered), "trial faults")
    if category == "bad input":
        kind = case_id.partition("[")[2].partition(":")[0]
        category = f"bad input: {BAD_INPUT_KINDS.get(kind, kind)}"
    return category


if __name__ == "__main__":  # a quick look at the census without the kill loop
    started = time.time()
    print(json.dumps(run_census(Path.cwd()), indent=1), f"{time.time() - started:.0f} s")
