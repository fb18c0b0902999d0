"""`clipsearch bench search`: its spaces search one space, its accounting of epochs and of the
goal (within 1% of the grid's best for at most a quarter of its epochs, above random search at
the same epochs, on the medians over the search seeds), and random search replayed on the grid's
curves."""

import json
import re
import statistics

import pytest

from clipsearch import tracking
from clipsearch.bench.search import (SEARCHED, SPACES, compare, grid_curves, grid_rank, over_seeds, protocol_options,
                                     random_search_replay, ranking_settles, seed_dir, spread, stage_figures,
                                     write_search_result)
from clipsearch.results import TrialRecord, write_trials_csv
from clipsearch.tune.phases import prepare
from clipsearch.tune.space import load_space


def _space(name: str, phase: str):
    return load_space(SPACES / f"{name}.yaml", phase)


def test_the_grid_covers_exactly_the_space_phase1_searches():
    grid = _space("grid", "grid").grid_axes()
    phase1 = {p.key: list(p.values) for p in _space("phase1_quick", "phase1").params}
    assert set(grid) == set(phase1) == set(SEARCHED)
    for key in SEARCHED:
        assert sorted(map(str, grid[key])) == sorted(map(str, phase1[key]))


def test_a_phase3_trial_gets_at_least_a_grid_cells_budget_and_the_protocol_a_quarter_of_the_grids():
    grid, phase3 = _space("grid", "grid"), _space("phase3_quick", "phase3")
    assert grid.constants["data.fraction"] == phase3.constants["data.fraction"] == 1.0
    assert phase3.constants["train.epochs"] >= grid.constants["train.epochs"]
    phase1, phase2 = _space("phase1_quick", "phase1"), _space("phase2_quick", "phase2")

    def epochs(space, trials):  # at most: every trial to train.epochs, over all the pairs
        return trials * space.constants["train.epochs"] * space.constants["data.fraction"]

    cells = len(next(p for p in phase2.params if p.key == "loss.name").values) * phase2.top_optimizers
    planned = epochs(phase1, phase1.num_samples) + epochs(phase2, cells) + epochs(phase3, phase3.num_samples)
    assert planned <= 0.25 * epochs(grid, 18)


def _row(trial, fraction, epochs, best, loss="sogclr", opt="adamw", lr=3e-3, seconds=10.0):
    """A trials.csv row as read_trials_csv gives it (config gathered under "config")."""
    return {"trial_id": trial, "status": "TERMINATED", "rank": None, "epochs": epochs, "seconds": seconds,
            "config": {"data.fraction": fraction, "loss.name": loss, "optimizer.name": opt, "optimizer.lr": lr},
            "best_objective": best}


def _csv_row(row):
    """The same row as trial_rows writes it (config as config/KEY columns)."""
    return {**{k: v for k, v in row.items() if k != "config"}, **{f"config/{k}": v for k, v in row["config"].items()}}


def test_epochs_are_counted_over_all_pairs():
    rows = [_row("a", 0.2, 1, 3.0), _row("b", 0.2, 3, 5.0), _row("c", 0.5, 2, 4.0)]
    figures = stage_figures(rows)
    assert figures["epochs_spent"] == pytest.approx(0.2 + 0.6 + 1.0)
    assert figures["best"] == 5.0
    assert figures["trial_seconds"] == 30.0


def test_an_errored_trial_without_a_metric_still_counts_its_epochs():
    figures = stage_figures([_row("a", 1.0, 2, None), _row("b", 1.0, 4, 7.0)])
    assert figures["epochs_spent"] == 6 and figures["best"] == 7.0


@pytest.mark.parametrize("protocol_best, protocol_epochs, met", [
    (19.9, 18.0, True),     # 99.5% of the best for exactly a quarter of the epochs
    (19.7, 18.0, False),    # 98.5%: more than 1% below
    (20.5, 18.5, False),    # better, but more than a quarter of the epochs
])
def test_the_goal(protocol_best, protocol_epochs, met):
    grid = {"epochs_spent": 72.0, "best": 20.0}
    stages = {"phase1": {"epochs_spent": protocol_epochs, "best": protocol_best, "trial_seconds": 1.0},
              "phase2": {"epochs_spent": 0.0, "best": None, "trial_seconds": 0.0}}
    assert compare(stages, grid)["goal_met"] is met


def test_grid_rank_finds_the_cell_nearest_the_picked_learning_rate():
    rows = [_row("a", 1, 4, 10.0, lr=3e-3), _row("b", 1, 4, 12.0, lr=1e-2), _row("c", 1, 4, 11.0, loss="isogclr")]
    assert grid_rank(rows, {"loss.name": "sogclr", "optimizer.name": "adamw", "optimizer.lr": 8e-3}) == 1
    assert grid_rank(rows, {"loss.name": "sogclr", "optimizer.name": "adamw", "optimizer.lr": 2e-3}) == 3
    assert grid_rank(rows, {"loss.name": "clip", "optimizer.name": "adamw", "optimizer.lr": 2e-3}) is None


def _record(trial, lr, curve, loss="sogclr", opt="adamw"):
    return TrialRecord(trial, "TERMINATED", {"loss.name": loss, "optimizer.name": opt, "optimizer.lr": lr},
                       [{"epoch": i + 1, "objective": v} for i, v in enumerate(curve)])


def test_ranking_settles_measures_how_early_the_final_order_shows():
    # cell c leads from epoch 1 on; a and b swap places after epoch 1
    cells = grid_curves([_record("a", 1e-3, [3, 6, 9]), _record("b", 3e-3, [4, 5, 8]), _record("c", 1e-2, [5, 7, 10])])
    assert [c["optimizer.lr"] for c in cells] == [1e-2, 1e-3, 3e-3]  # best final first
    settles = ranking_settles(cells)
    assert [r["epoch"] for r in settles] == [1, 2, 3]
    assert settles[0]["spearman_with_final"] == pytest.approx(0.5)
    assert settles[1]["spearman_with_final"] == pytest.approx(1.0) == settles[2]["spearman_with_final"]
    assert [r["final_best_cell_rank"] for r in settles] == [1, 1, 1]
    late = ranking_settles(grid_curves([_record("a", 1e-3, [5, 6, 7]), _record("b", 3e-3, [4, 5, 8]),
                                        _record("c", 1e-2, [3, 4, 9])]))
    assert [r["final_best_cell_rank"] for r in late] == [3, 3, 1]  # the final best starts last


def test_a_search_seed_seeds_the_sampler_alone_in_its_own_experiment(tmp_path):
    exp = tmp_path / "bench"
    plan = prepare("phase1", protocol_options(exp, 3, tracking.default_tracking_uri(tmp_path)))
    assert plan.phase_dir == (exp / "bench-seed3" / "phase1").resolve() and seed_dir(exp, 3) == exp / "bench-seed3"
    assert plan.state["search_seed"] == 3
    assert plan.state["seed"] == plan.state["constants"]["seed"] == 0  # the trials train as the grid's cells do
    assert plan.state["tracking_uri"] == tracking.default_tracking_uri(tmp_path)  # one store with the grid's


def test_the_benchmark_runs_a_protocol_per_search_seed_and_the_grid_once(tmp_path, monkeypatch):
    import contextlib

    from clipsearch.bench import search as bench_search
    from clipsearch.tune import cluster

    ran, written = [], {}
    monkeypatch.setattr(cluster, "ray_session", lambda address: contextlib.nullcontext())
    monkeypatch.setattr(bench_search, "run_protocol", lambda opts: iter(ran.append(opts) or ()))
    monkeypatch.setattr(bench_search, "run_or_keep", lambda plan: ran.append(plan))
    monkeypatch.setattr(bench_search, "write_search_result",
                        lambda exp_dir, out_dir, seeds, wall: written.update(exp_dir=exp_dir, seeds=seeds, wall=wall))
    (tmp_path / "bench" / "bench-seed1").mkdir(parents=True)  # seed 1 started before: gone on with
    def report(phase_dir):
        pass

    bench_search.run_search_benchmark("bench", results=tmp_path, out_dir=tmp_path / "out", seeds=3,
                                      after_phase=report)
    protocols, grid = ran[:3], ran[3:]
    assert [o.search_seed for o in protocols] == [0, 1, 2] and [plan.phase for plan in grid] == ["bench-grid"]
    assert {o.after_phase for o in protocols} == {grid[0].after_phase} == {report}  # every phase ends with it
    assert [o.name for o in protocols] == ["bench-seed0", "bench-seed1", "bench-seed2"]
    assert [o.resume for o in protocols] == [False, True, False]
    assert {o.results for o in protocols} == {tmp_path / "bench"} and {o.seed for o in protocols} == {None}
    assert {o.tracking_uri for o in protocols} == {tracking.default_tracking_uri(tmp_path)}
    assert written["seeds"] == 3 and set(written["wall"]) == {"protocol_seed0", "protocol_seed1", "protocol_seed2",
                                                              "grid"}


def _cells(n=18, epochs=4):
    """Grid cells as grid_curves gives them: distinct configs, rising curves of distinct values."""
    combos = [(loss, opt, lr) for loss in ("sogclr", "isogclr", "isogclr_v2") for opt in ("adamw", "radam", "momentum")
              for lr in (3e-3, 1e-2)][:n]
    return [{"loss.name": loss, "optimizer.name": opt, "optimizer.lr": lr, "data.fraction": 1.0,
             "curve": [10.0 * i + k + 1 for k in range(epochs)]} for i, (loss, opt, lr) in enumerate(combos)]


@pytest.mark.parametrize("budget, full, cut", [(17.8, 4, 1), (8.0, 2, 0), (0.5, 0, 0), (100.0, 18, 0)])
def test_random_search_replay_spends_no_more_than_its_budget(budget, full, cut):
    replay = random_search_replay(_cells(), budget, seed=0)
    epochs = [c["epochs"] for c in replay["cells"]]
    assert epochs == [4] * full + ([cut] if cut else [])  # whole cells, then the one cut off
    assert replay["epochs_spent"] == sum(epochs) <= budget
    assert len({(c["loss.name"], c["optimizer.name"], c["optimizer.lr"]) for c in replay["cells"]}) == len(epochs)
    assert replay["how"] == "replayed from the grid's curves"


def test_random_search_replay_counts_only_the_epochs_a_cut_off_cell_reached():
    cells = _cells()
    replay = random_search_replay(cells, 1.0, seed=5)  # one epoch of the first cell drawn
    (drawn,) = replay["cells"]
    curve = next(c["curve"] for c in cells if all(c[k] == drawn[k] for k in SEARCHED))
    assert drawn["epochs"] == 1 and replay["best"] == drawn["best"] == curve[0] < max(curve)
    whole = random_search_replay(cells, 9.0, seed=5)  # two whole cells and one epoch of a third
    assert whole["best"] == max(max(c["curve"][:c_run["epochs"]]) for c_run in whole["cells"]
                                for c in cells if all(c[k] == c_run[k] for k in SEARCHED))


def test_random_search_replay_counts_epochs_over_all_pairs():
    cells = [{**c, "data.fraction": 0.5} for c in _cells(2)]
    replay = random_search_replay(cells, 3.0, seed=0)  # one cell's 4 half-epochs, then 2 of the next
    assert [c["epochs"] for c in replay["cells"]] == [4, 2] and replay["epochs_spent"] == 3.0


def test_random_search_replay_is_deterministic_per_seed_and_blind_to_the_cells_order():
    cells = _cells()
    draws = {seed: [tuple(c[k] for k in SEARCHED) for c in random_search_replay(cells, 17.8, seed)["cells"]]
             for seed in range(5)}
    assert all(random_search_replay(cells, 17.8, seed)["cells"] == random_search_replay(cells, 17.8, seed)["cells"]
               for seed in range(5))
    assert len(set(map(tuple, draws.values()))) > 1  # the seeds draw differently
    shuffled = cells[::-1]  # grid_curves orders the cells by their results; the draw must not see that
    assert [tuple(c[k] for k in SEARCHED) for c in random_search_replay(shuffled, 17.8, 2)["cells"]] == draws[2]


def test_spread_gives_the_median_the_quartiles_and_the_std_over_the_seeds():
    values = [4.0, 1.0, 100.0, 3.0, 2.0, None]
    figure = spread(values)
    assert figure["n"] == 5 and figure["median"] == 3.0 and (figure["min"], figure["max"]) == (1.0, 100.0)
    assert (figure["q25"], figure["q75"]) == (2.0, 4.0)
    assert figure["std"] == pytest.approx(statistics.stdev([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert spread([5.0, 7.0])["median"] == 6.0 and spread([5.0])["std"] == 0.0
    assert spread([None])["median"] is None


GRID = {"epochs_spent": 72.0, "best": 20.0}


def _seed(seed, best, epochs, random_best):
    total = compare({"phase1": {"epochs_spent": epochs, "best": best, "trial_seconds": 1.0}}, GRID)
    return {"seed": seed, "total": total, "random_search": {"best": random_best},
            "beats_random": best is not None and best > random_best}


@pytest.mark.parametrize("bests, epochs, met, meeting", [
    ([19.9, 10.0, 20.0], [18, 18, 18], True, 2),     # seed 1 misses; the median (19.9) still meets it
    ([19.9, 10.0, 9.0], [18, 18, 18], False, 1),     # one seed meets it: the median (10) does not
    ([20.0, 20.0, 20.0], [17, 30, 30], False, 1),    # the median seed spent 30 of 72 epochs
    ([19.9, None, 20.0], [18, 18, 18], False, 2),    # a seed without a best fails the median verdict
])
def test_the_verdict_is_on_the_medians_over_every_seed(bests, epochs, met, meeting):
    summary = over_seeds([_seed(i, b, e, 5.0) for i, (b, e) in enumerate(zip(bests, epochs))])
    assert summary["median"]["goal_met"] is met and summary["seeds_meeting_goal"] == meeting
    assert summary["median"]["epochs_spent"] == statistics.median(epochs)


def test_the_protocol_must_be_above_random_search_in_the_median():
    per_seed = [_seed(0, 19.9, 18, 19.95), _seed(1, 19.9, 18, 5.0), _seed(2, 19.9, 18, 20.0)]
    summary = over_seeds(per_seed)
    assert summary["median"]["random_search_best"] == 19.95 and summary["median"]["beats_random"] is False
    assert summary["seeds_beating_random"] == 1 and summary["median"]["goal_met"] is True
    assert summary["median"]["verdict_met"] is False  # the goal alone is not the verdict


def _lay_down(exp, stages):
    for stage, rows in stages.items():
        (exp / stage).mkdir(parents=True)
        write_trials_csv(exp / stage / "trials.csv", [_csv_row(r) for r in rows])


GRID_CELLS = {("sogclr", "adamw", 3e-3): [2, 4, 6, 8], ("sogclr", "adamw", 1e-2): [3, 5, 7, 20],
              ("isogclr", "adamw", 3e-3): [1, 2, 3, 4], ("isogclr", "momentum", 1e-2): [5, 6, 6, 6]}


def _protocol(best):
    """A seed's phases: 3.8 epochs over all pairs, its best in phase 3."""
    return {"phase1": [_row("a", 0.2, 1, 3.0), _row("b", 0.2, 3, 6.0, lr=1e-2)],
            "phase2": [_row("c", 0.5, 2, 8.0, lr=1e-2)],
            "phase3": [_row("d", 1.0, 2, best, lr=9e-3)]}


def test_the_written_tables_list_every_seed_the_medians_and_the_anchors(tmp_path):
    exp = tmp_path / "exp"
    cells = list(GRID_CELLS.items())
    _lay_down(exp, {"grid": [_row(f"g{i}", 1.0, 4, max(curve), loss=loss, opt=opt, lr=lr)
                             for i, ((loss, opt, lr), curve) in enumerate(cells)]})
    for seed, best in enumerate((19.9, 10.0, 20.0)):  # seed 1 misses the goal
        _lay_down(seed_dir(exp, seed), _protocol(best))
    records = [_record(f"g{i}", lr, curve, loss=loss, opt=opt) for i, ((loss, opt, lr), curve) in enumerate(cells)]
    path = write_search_result(exp, tmp_path / "out", 3, {"grid": 2.0}, grid_records=records)
    result = json.loads((tmp_path / "out" / "search.json").read_text())
    seeds = result["protocol"]["per_seed"]
    assert [s["total"]["best"] for s in seeds] == [19.9, 10.0, 20.0]
    assert [s["total"]["goal_met"] for s in seeds] == [True, False, True]  # 3.8 of 16 epochs: 23.75%
    assert result["grid"]["best"] == 20 and result["grid"]["epochs_spent"] == 16
    median = result["protocol"]["median"]
    assert median["best"] == 19.9 and median["epochs_spent"] == pytest.approx(3.8) and median["goal_met"] is True
    assert result["protocol"]["total"] == median  # what clipsearch bench summary reads
    curves = grid_curves(records)
    for seed, figures in enumerate(seeds):  # random search: this seed's epochs, this seed's draw
        assert figures["random_search"] == random_search_replay(curves, figures["total"]["epochs_spent"], seed)
    assert result["random_search"]["expected_at_median_budget"]["draws"] == 1000
    assert result["protocol"]["seeds_meeting_goal"] == 2 and result["chance_objective"] == 3.4
    text = path.read_text()
    table = [line for line in text.splitlines() if re.match(r"\| seed \d", line)]
    assert len(table) == 3 and "| **no** |" in table[1] and "10.00" in table[1]  # the miss is listed
    assert all("(replayed)" in line for line in table)
    for label in ("| **median** | 19.90 |", "| min - max | 10.00 - 20.00 |", "| IQR (25%-75%) |",
                  "| **exhaustive grid** | 20.00 | 16.0 | 100% |", "): **met**.", "2 of 3 seeds met the goal",
                  "| 0 | 2, 0.8, 6.00 | 1, 1.0, 8.00 | 1, 2.0, 19.90 | sogclr / adamw / 0.009 | 1 of 4 |",
                  "Chance level of the objective on the embedded default: 3.4", "| sogclr | adamw | 0.01 | 3.00 |"):
        assert label in text
    assert "| [search](search.md) | search: goal" in (tmp_path / "out" / "README.md").read_text()

