"""The phase's progress lines: trials done of the total, best so far beside chance, time left."""

from types import SimpleNamespace

from clipsearch.tune.callbacks import ProgressLines
from clipsearch.tune.runner import _trial_count


def trial(status, trial_id="t"):
    return SimpleNamespace(status=status, trial_id=trial_id, last_result={"epoch": 2}, config={})


def test_a_finished_trials_line_gives_done_of_total_best_so_far_chance_and_time_left(capsys):
    lines = ProgressLines("phase1", "objective", epochs=4, total=16)
    lines.started -= 60  # a minute into the phase
    trials = [trial("TERMINATED"), trial("TERMINATED"), trial("RUNNING", "now")]
    for value in (12.0, 29.9, 20.0):
        lines.on_trial_result(0, trials, trials[2], {"epoch": 1, "objective": value, "chance_objective": 3.4})
    lines.on_trial_complete(0, trials, trials[2])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "done after 2 epoch(s) (stopped early); 3/16 trials done, best objective 29.9 (chance 3.4)" in line
    assert "1m00s" in line and "about 4m20s left" in line  # 20 s a trial, 13 to go


def test_the_total_counts_every_grid_cell():
    grid = {"optimizer": [{}, {}], "loss": [{}, {}, {}], "axes": {"optimizer.lr": [1e-3, 3e-3]}}
    assert _trial_count({"grid": grid, "num_samples": 1}) == 12
    assert _trial_count({"num_samples": 16}) == 16


def test_trial_history_keeps_every_epoch_that_tunes_progress_csv_lost_on_a_retry(tmp_path):
    """Tune copies a retried trial's progress.csv back from storage, where the epoch reported
    just before the failure may not have arrived yet: the driver's own history keeps it."""
    from clipsearch.tune.callbacks import TrialHistory
    from clipsearch.tune.runner import _record

    history = TrialHistory(tmp_path / "history")
    radam = SimpleNamespace(trial_id="r1", status="ERROR", config={"optimizer.name": "radam"}, num_failures=2,
                            checkpoint=None, get_error=lambda: "InjectedFault: at epoch 2")
    history.on_trial_result(0, [radam], radam, {"epoch": 1, "objective": 7.5, "time_total_s": 3.0, "config": {}})
    from clipsearch.results import read_history

    progress_csv = []  # what Tune's copy held after the retry: the epoch-1 row was lost
    record = _record(radam, progress_csv + read_history(tmp_path / "history", "r1"))
    assert record.reach == 1 and record.history[0]["objective"] == 7.5 and record.seconds == 3.0
    assert "config" not in record.history[0] and record.error == "InjectedFault: at epoch 2"


def test_an_epoch_reported_in_both_sources_or_twice_counts_once_the_later_winning(tmp_path):
    from clipsearch.tune.runner import _record

    trial = SimpleNamespace(trial_id="t", status="TERMINATED", config={}, num_failures=0, checkpoint=None)
    rows = [{"epoch": 1, "objective": 4.0, "time_total_s": 2.0}, {"epoch": 2, "objective": 6.0, "time_total_s": 4.0},
            {"epoch": float("nan"), "objective": 1.0},  # a row without an epoch is not an epoch
            {"epoch": 2, "objective": 6.5, "time_total_s": 5.0}]
    record = _record(trial, rows)
    assert [row["objective"] for row in record.history] == [4.0, 6.5] and record.seconds == 5.0


def test_a_history_line_cut_short_by_a_killed_driver_is_skipped(tmp_path):
    from clipsearch.results import read_history

    (tmp_path / "trial_t.jsonl").write_text('{"epoch": 1, "objective": 2.0}\n{"epoch": 2, "obj')
    assert read_history(tmp_path, "t") == [{"epoch": 1, "objective": 2.0}]
    assert read_history(tmp_path, "missing") == []
