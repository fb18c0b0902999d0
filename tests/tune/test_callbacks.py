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
