"""The reliability bench's bookkeeping: how cases are filed, how an earlier file's sections are
kept (the kill loop's and the soak's: test_kill_loop.py, test_soak.py)."""

import json

from clipsearch.bench.reliability import _previous_sections, categorize


def test_cases_are_filed_by_what_they_test():
    assert categorize("tests.test_bad_input::test_bad_input_is_exit_2[config: python tag]") == "security"
    assert categorize("tests.test_bad_input::test_bad_input_is_exit_2[data: corrupt JPEG]") == "bad input: data file"
    assert categorize("tests.test_bad_input::test_bad_input_is_exit_2[cli: unknown option]") == "bad input: argument"
    assert categorize("tests.test_reliability::test_a_full_disk_while_writing_results_keeps_the_earlier_file") == "disk full"
    assert categorize("tests.test_reliability::test_a_checkpoint_holding_code_is_refused_not_run") == "security"
    assert categorize("tests.test_reliability::test_a_damaged_checkpoint_falls_back_to_the_previous_epoch[empty]") \
        == "trial faults"


def test_a_file_without_sections_is_split_into_census_and_kill_loop(tmp_path):
    old = {"environment": {"date": "D"}, "command": "C", "kill_loop": {"lost": 0},
           "categories": {"security": {"tried": 3}, "worker killed mid-epoch (bench)": {"tried": 1}}}
    (tmp_path / "reliability.json").write_text(json.dumps(old))
    sections = _previous_sections(tmp_path / "reliability.json")
    assert sections["census"] == {"categories": {"security": {"tried": 3}}, "run": {"date": "D", "command": "C"}}
    assert sections["kill loop"]["kill_loop"] == {"lost": 0} and "soak" not in sections
