"""`clipsearch bench search`: its spaces search one space, and its accounting of epochs and of
the goal (within 1% of the grid's best for at most a quarter of its epochs)."""

import json

import pytest

from clipsearch.tune.bench_search import (SEARCHED, SPACES, compare, grid_curves, grid_rank, ranking_settles,
                                         replay_phase2_at_grid_budget, stage_figures, write_search_result)
from clipsearch.tune.ranking import TrialRecord
from clipsearch.tune.results import write_trials_csv
from clipsearch.tune.space import load_space



def _space(name: str, phase: str):
    return load_space(SPACES / f"{name}.yaml", phase)


def test_the_grid_covers_exactly_the_space_phase1_searches():
    grid = _space("grid", "grid").grid_axes()
    phase1 = {p.key: list(p.values) for p in _space("phase1_quick", "phase1").params}
    assert set(grid) == set(phase1) == set(SEARCHED)
    for key in SEARCHED:
        assert sorted(map(str, grid[key])) == sorted(map(str, phase1[key]))


def test_a_phase3_trial_gets_a_grid_cells_budget():
    grid, phase3 = _space("grid", "grid"), _space("phase3_quick", "phase3")
    for key in ("train.epochs", "data.fraction"):
        assert phase3.constants[key] == grid.constants[key]
    assert grid.constants["data.fraction"] == 1.0


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


def test_the_written_table_holds_every_stage_and_the_verdict(tmp_path):
    exp = tmp_path / "exp"
    stages = {"phase1": [_row("a", 0.2, 1, 3.0), _row("b", 0.2, 3, 6.0, lr=1e-2)],
              "phase2": [_row("c", 0.5, 2, 8.0, lr=1e-2)],
              "phase3": [_row("d", 1.0, 4, 15.0, lr=9e-3), _row("e", 1.0, 4, 14.0, lr=5e-3)],
              "grid": [_row(f"g{i}", 1.0, 4, 10.0 + i, lr=lr) for i, lr in enumerate((3e-3, 1e-2))]}
    for stage, rows in stages.items():
        (exp / stage).mkdir(parents=True)
        write_trials_csv(exp / stage / "trials.csv", [_csv_row(r) for r in rows])
    records = [_record(f"g{i}", lr, curve) for i, (lr, curve) in enumerate(((3e-3, [4, 8, 10]), (1e-2, [5, 9, 11])))]
    path = write_search_result(exp, tmp_path / "out", "exp", {"protocol": 1.0, "grid": 2.0}, grid_records=records)
    result = json.loads((tmp_path / "out" / "search.json").read_text())
    total = result["protocol"]["total"]
    assert total["epochs_spent"] == pytest.approx(0.8 + 1.0 + 8.0)
    assert total["best"] == 15.0 and result["grid"]["best"] == 11.0
    assert total["goal_met"] is False  # 9.8 of 8 epochs: more than a quarter
    assert result["protocol_pick_rank_in_grid"] == 1  # sogclr/adamw at 9e-3: the 1e-2 cell, the grid's best
    text = path.read_text()
    assert [c["curve"] for c in result["grid_cells"]] == [[5, 9, 11], [4, 8, 10]]
    for label in ("protocol phase1", "protocol phase3", "exhaustive grid", "**not met**", "| sogclr | adamw | 0.01 | 5.00 |"):
        assert label in text


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


def test_the_replay_reads_phase1s_pick_off_the_grids_curves():
    phase1 = [_row("a", 0.2, 3, 4.2, opt="adamw", lr=3e-3), _row("b", 0.2, 1, 3.0, opt="momentum", lr=1e-2)]
    cells = grid_curves([_record("g1", 3e-3, [4, 7, 14]), _record("g2", 3e-3, [4, 6, 22], loss="isogclr_v2"),
                         _record("g3", 1e-2, [5, 9, 30]), _record("g4", 1e-2, [6, 7, 8], opt="momentum")])
    replay = replay_phase2_at_grid_budget(phase1, cells, phase1_epochs=3.0)
    # adamw at 3e-3 (phase 1's best), every loss: g1 and g2; not g3 (another lr) nor g4
    assert replay["cells"] == 2 and replay["best"] == 22 and replay["best_loss"] == "isogclr_v2"
    assert replay["epochs_spent"] == 3.0 + 2 * 3
    assert replay_phase2_at_grid_budget([], cells, 0.0) is None
