"""The soak's bookkeeping: how the driver's RSS curve is summed up and held to its bound."""

from clipsearch.bench.soak import PEAK_RSS_BOUND, Soak, check, rss_summary

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
