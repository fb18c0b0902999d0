"""The reliability bench's bookkeeping: how cases are filed, what counts as lost, how the soak's
RSS curve is summed up and held to its bound, how an earlier file's sections are kept."""

import json

from clipsearch.bench.reliability import _previous_sections, categorize
from clipsearch.tune.reliability import KillLoop, _half_written
from clipsearch.tune.soak import PEAK_RSS_BOUND, Soak, check, rss_summary


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


MIB = 1024**2


def _samples(trials: int, start_mib: float, per_trial_mib: float) -> list[tuple[float, int, int]]:
    """Five samples (seconds) a trial, the driver's RSS growing linearly with the trials done."""
    return [(float(t), int((start_mib + per_trial_mib * (t // 5)) * MIB), t // 5) for t in range(5 * trials + 5)]


def _finished(trials: int) -> Soak:
    return Soak(trials_configured=trials, exit_code=0, rows=trials, distinct_trials=trials, terminated=trials)


def test_a_flat_driver_passes_the_soak_bound():
    summary = rss_summary(_samples(100, 400, 0.0), 100)
    assert summary["start_mib"] == summary["at_100pct"] == summary["peak_mib"] == 400
    assert summary["growth_25_to_100pct"] == 0 and check(_finished(100), summary) == []


def test_a_driver_growing_with_the_trials_fails_the_soak_bound():
    summary = rss_summary(_samples(100, 400, 2.0), 100)  # 2 MiB a trial: 450 -> 600 MiB from trial 25 to 100
    assert summary["at_25pct"] == 450 and summary["at_100pct"] == 600
    assert summary["growth_per_10_trials_mib"] == 20.0
    assert [f for f in check(_finished(100), summary) if "growth" in f]


def test_the_soak_fails_on_missing_trials_open_runs_or_a_peak_over_the_bound():
    summary = rss_summary(_samples(100, 400, 0.0), 100)
    soak = _finished(100)
    soak.terminated, soak.errored, soak.runs_left_running = 99, 1, 1
    assert len(check(soak, summary)) == 2
    summary["peak_mib"] = PEAK_RSS_BOUND / MIB
    assert any("peak" in f for f in check(_finished(100), summary))
    assert check(_finished(100), rss_summary([], 100))  # no sample at all is no pass


def test_a_file_without_sections_is_split_into_census_and_kill_loop(tmp_path):
    old = {"environment": {"date": "D"}, "command": "C", "kill_loop": {"lost": 0},
           "categories": {"security": {"tried": 3}, "worker killed mid-epoch (bench)": {"tried": 1}}}
    (tmp_path / "reliability.json").write_text(json.dumps(old))
    sections = _previous_sections(tmp_path / "reliability.json")
    assert sections["census"] == {"categories": {"security": {"tried": 3}}, "run": {"date": "D", "command": "C"}}
    assert sections["kill loop"]["kill_loop"] == {"lost": 0} and "soak" not in sections
