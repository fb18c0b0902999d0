"""The kill loop's bookkeeping: what counts as a half-written file, and as lost."""

from clipsearch.bench.kill_loop import KillLoop, _half_written


def test_a_cut_results_file_or_a_left_temp_file_counts_as_half_written(tmp_path):
    (tmp_path / "best.json").write_text('{"trial_id": "a", "sco')
    (tmp_path / "phase.json").write_text('{"phase": "phase1"}\n')
    (tmp_path / "trials.csv").write_text("trial_id,status\na,TERMINATED\n")
    (tmp_path / ".trials.csv.tmp-123").write_text("trial_id")
    assert sorted(_half_written(tmp_path)) == sorted([str(tmp_path / "best.json"), str(tmp_path / ".trials.csv.tmp-123")])


def test_lost_counts_missing_and_repeated_trials_and_open_runs():
    assert KillLoop(trials_configured=4, trials_completed=4).lost == 0
    assert KillLoop(trials_configured=4, trials_completed=3, trials_repeated=1, runs_left_running=2).lost == 4
