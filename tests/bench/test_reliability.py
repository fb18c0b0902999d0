"""The reliability bench's bookkeeping: how cases are filed and what counts as lost."""

from clipsearch.bench.reliability import categorize
from clipsearch.tune.reliability import KillLoop, _half_written


def test_cases_are_filed_by_what_they_test():
    assert categorize("tests.test_bad_input::test_bad_input_is_exit_2[config: python tag]") == "security"
    assert categorize("tests.test_bad_input::test_bad_input_is_exit_2[data: corrupt JPEG]") == "bad input: data file"
    assert categorize("tests.test_bad_input::test_bad_input_is_exit_2[cli: unknown option]") == "bad input: argument"
    assert categorize("tests.test_reliability::test_a_full_disk_while_writing_results_keeps_the_earlier_file") == "disk full"
    assert categorize("tests.test_reliability::test_a_checkpoint_holding_code_is_refused_not_run") == "security"
    assert categorize("tests.test_reliability::test_a_damaged_checkpoint_falls_back_to_the_previous_epoch[empty]") \
        == "trial faults"


def test_a_cut_results_file_or_a_left_temp_file_counts_as_half_written(tmp_path):
    (tmp_path / "best.json").write_text('{"trial_id": "a", "sco')
    (tmp_path / "phase.json").write_text('{"phase": "phase1"}\n')
    (tmp_path / "trials.csv").write_text("trial_id,status\na,TERMINATED\n")
    (tmp_path / ".trials.csv.tmp-123").write_text("trial_id")
    assert sorted(_half_written(tmp_path)) == sorted([str(tmp_path / "best.json"), str(tmp_path / ".trials.csv.tmp-123")])


def test_lost_counts_missing_and_repeated_trials_and_open_runs():
    assert KillLoop(trials_configured=4, trials_completed=4).lost == 0
    assert KillLoop(trials_configured=4, trials_completed=3, trials_repeated=1, runs_left_running=2).lost == 4
