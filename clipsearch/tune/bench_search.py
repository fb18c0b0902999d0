"""Search efficiency: the quick three-phase protocol against an exhaustive grid over the same
space, both run on the embedded pairs with the quick preset's tiny towers, in one command.

The space (search_spaces/bench_search/): 3 losses x 3 optimizers x 2 learning rates.
- grid.yaml: every one of the 18 cells, 4 epochs on all the training pairs, no early stopping;
- phase1..3_quick.yaml: the protocol's shape on that space: TPE + ASHA on 20% of the pairs,
  a grid of phase 1's top picks on half of them, then TPE around the best (the learning rate
  within [0.5, 2] x) on all of them for the grid's 4 epochs, so that a phase 3 trial and a grid
  cell get the same budget.

What is compared: the best validation objective any trial of each search reached (at the
trial's best epoch), and the epochs each spent, counted in epochs over all the pairs (a trial's
epochs x its data fraction: an epoch on 20% of the pairs is a fifth of one). The issue's goal:
within 1% of the grid's best for at most a quarter of its epochs.

Each search is a normal experiment folder (results/NAME/phase1..3, results/NAME/grid) with its
MLflow runs; a second run of the command goes on with what is there (finished phases kept).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..bench.common import environment, write_result
from .phases import PHASES, Options, grid_plan, resumed_plan, run_or_keep, run_protocol
from .results import TRIALS_CSV, read_trials_csv
from .space import load_space

SPACES = Path(__file__).resolve().parents[2] / "search_spaces" / "bench_search"
GRID = "grid"
#: the keys both searches turn
SEARCHED = ("loss.name", "optimizer.name", "optimizer.lr")
#: the goal the issue sets: the protocol's best within this share of the grid's ...
OBJECTIVE_TOLERANCE = 0.01
#: ... for at most this share of the grid's epochs
EPOCH_SHARE = 0.25


def run_search_benchmark(name: str = "bench-search", results: Path = Path("results"),
                         out_dir: Path = Path("results/benchmarks")) -> Path:
    """Run (or go on with) the protocol and the grid under results/NAME; write OUT/search.*."""
    from .cluster import ray_session

    exp_dir = results / name
    opts = Options(name=name, quick=True, spaces_dir=SPACES, results=results, resume=exp_dir.exists())
    if opts.resume:
        print(f"bench search: going on with {exp_dir} (finished phases kept)", file=sys.stderr)
    grid_dir = (exp_dir / GRID).resolve()
    grid = resumed_plan(grid_dir) or grid_plan(load_space(SPACES / "grid.yaml", GRID), opts, grid_dir, "bench-grid")
    wall: dict[str, float] = {}
    with ray_session(None):
        started = time.perf_counter()
        for outcome in run_protocol(opts):
            print(f"bench search: {outcome.phase} done", file=sys.stderr)
        wall["protocol"] = time.perf_counter() - started
        started = time.perf_counter()
        run_or_keep(grid)
        wall["grid"] = time.perf_counter() - started
    return write_search_result(exp_dir, out_dir, name, wall)


# ------------------------------------------------------------------------------ figures

def stage_figures(rows: list[dict], metric: str = "objective") -> dict[str, Any]:
    """A phase's trials.csv rows -> trials, epochs spent (over all pairs), best metric, the
    best trial's config and the seconds its trials trained."""
    spent = sum((row.get("epochs") or 0) * float(row["config"].get("data.fraction", 1.0)) for row in rows)
    reached = [row for row in rows if isinstance(row.get(f"best_{metric}"), (int, float))]
    top = max(reached, key=lambda row: row[f"best_{metric}"], default=None)
    return {
        "trials": len(rows), "epochs_spent": round(spent, 3),
        "best": top[f"best_{metric}"] if top else None,
        "best_config": {k: v for k, v in (top or {"config": {}})["config"].items() if k in SEARCHED},
        "trial_seconds": round(sum(row.get("seconds") or 0.0 for row in rows), 1),
    }


def compare(protocol_stages: dict[str, dict], grid: dict) -> dict[str, Any]:
    """The protocol's totals against the grid's, and whether the issue's goal is met."""
    spent = sum(s["epochs_spent"] for s in protocol_stages.values())
    best = max((s["best"] for s in protocol_stages.values() if s["best"] is not None), default=None)
    share = spent / grid["epochs_spent"] if grid["epochs_spent"] else None
    ratio = best / grid["best"] if best is not None and grid["best"] else None
    return {
        "epochs_spent": round(spent, 3), "best": best,
        "trial_seconds": round(sum(s["trial_seconds"] for s in protocol_stages.values()), 1),
        "epoch_share_of_grid": share, "best_over_grid_best": ratio,
        "goal_met": bool(share is not None and ratio is not None
                         and share <= EPOCH_SHARE and ratio >= 1 - OBJECTIVE_TOLERANCE),
    }


def grid_rank(grid_rows: list[dict], config: dict[str, Any], metric: str = "objective") -> int | None:
    """Where the grid cell with the protocol's loss and optimizer (nearest learning rate) ranks
    among the grid's cells, 1 = best."""
    same = [r for r in grid_rows if all(r["config"].get(k) == config.get(k) for k in ("loss.name", "optimizer.name"))]
    if not same or config.get("optimizer.lr") is None:
        return None
    cell = min(same, key=lambda r: abs(float(r["config"]["optimizer.lr"]) - float(config["optimizer.lr"])))
    ordered = sorted((r for r in grid_rows if r.get(f"best_{metric}") is not None),
                     key=lambda r: r[f"best_{metric}"], reverse=True)
    return next((i + 1 for i, r in enumerate(ordered) if r is cell), None)


def grid_curves(records: list, metric: str = "objective") -> list[dict[str, Any]]:
    """Each grid cell's searched values and its metric at every epoch, best final first."""
    cells = [{**{k: r.config.get(k) for k in SEARCHED},
              "curve": [row.get(metric) for row in r.history]} for r in records if r.history]
    return sorted(cells, key=lambda c: c["curve"][-1] if c["curve"][-1] is not None else -1, reverse=True)


def ranking_settles(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How far each epoch's ranking of the grid's cells predicts the final one: Spearman's rank
    correlation between the metric at epoch k and at the last epoch, and the final best cell's
    rank at epoch k. An early-stopping search can only pick well where this is high early."""
    from scipy.stats import spearmanr

    full = [c for c in cells if None not in c["curve"]]
    if len(full) < 3:
        return []
    epochs = min(len(c["curve"]) for c in full)
    final = [c["curve"][epochs - 1] for c in full]
    best = max(range(len(full)), key=lambda i: final[i])
    out = []
    for k in range(epochs):
        at_k = [c["curve"][k] for c in full]
        rank_of_best = 1 + sum(v > at_k[best] for v in at_k)
        out.append({"epoch": k + 1, "spearman_with_final": float(spearmanr(at_k, final).statistic),
                    "final_best_cell_rank": rank_of_best})
    return out


def replay_phase2_at_grid_budget(phase1_rows: list[dict], cells: list[dict[str, Any]],
                                 phase1_epochs: float) -> dict[str, Any] | None:
    """What the protocol would reach if phase 2 ran phase 1's best optimizer (with its learning
    rate) x every loss at the grid's budget per cell instead of its own shorter one. Those cells
    are grid cells (same configs, same seed), so this is read off the grid's curves rather than
    run: a replay, reported as one."""
    ranked = [r for r in phase1_rows if r.get("best_objective") is not None]
    if not ranked or not cells:
        return None
    pick = max(ranked, key=lambda r: r["best_objective"])["config"]
    same = [c for c in cells if c["optimizer.name"] == pick.get("optimizer.name")
            and c["optimizer.lr"] == pick.get("optimizer.lr")]
    if not same:
        return None
    best = max(same, key=lambda c: max(v for v in c["curve"] if v is not None))
    return {"optimizer.name": pick["optimizer.name"], "optimizer.lr": pick["optimizer.lr"], "cells": len(same),
            "best": max(v for v in best["curve"] if v is not None), "best_loss": best["loss.name"],
            "epochs_spent": phase1_epochs + sum(len(c["curve"]) for c in same)}


def _grid_records(exp_dir: Path) -> list:
    from .results import PHASE_JSON, read_json
    from .runner import collect_records

    state = read_json(exp_dir / GRID / PHASE_JSON, "the grid's phase.json", "run clipsearch bench search again")
    return collect_records(state["experiment_path"])


def write_search_result(exp_dir: Path, out_dir: Path, name: str, wall: dict[str, float],
                        grid_records: list | None = None) -> Path:
    stages = {phase: stage_figures(read_trials_csv(exp_dir / phase / TRIALS_CSV)) for phase in PHASES}
    grid_rows = read_trials_csv(exp_dir / GRID / TRIALS_CSV)
    grid = stage_figures(grid_rows)
    total = compare(stages, grid)
    final_pick = stages["phase3"]["best_config"]
    cells = grid_curves(_grid_records(exp_dir) if grid_records is None else grid_records)
    settles = ranking_settles(cells)
    replay = replay_phase2_at_grid_budget(read_trials_csv(exp_dir / "phase1" / TRIALS_CSV), cells,
                                          stages["phase1"]["epochs_spent"])
    result = {
        "benchmark": "search_efficiency", "environment": environment(),
        "command": f"clipsearch bench search --name {name}",
        "space": "search_spaces/bench_search/ (3 losses x 3 optimizers x 2 learning rates)",
        "epochs_counted_as": "each trial's epochs x its data fraction (epochs over all training pairs)",
        "goal": f"best within {OBJECTIVE_TOLERANCE:.0%} of the grid's for at most {EPOCH_SHARE:.0%} of its epochs",
        "protocol": {**stages, "total": total}, "grid": grid,
        "protocol_pick_rank_in_grid": grid_rank(grid_rows, final_pick),
        "grid_ranking_by_epoch": settles, "grid_cells": cells,
        "replay_phase2_at_grid_budget": replay,
        "wall_seconds_of_this_invocation": {k: round(v, 1) for k, v in wall.items()},
    }
    rows = [(f"protocol {phase}", s["trials"], f"{s['epochs_spent']:.1f}", _share(s["epochs_spent"], grid),
             _num(s["best"]), _num(s["trial_seconds"], 0)) for phase, s in stages.items()]
    rows.append(("**protocol, all phases**", sum(s["trials"] for s in stages.values()),
                 f"{total['epochs_spent']:.1f}", _share(total["epochs_spent"], grid), _num(total["best"]),
                 _num(total["trial_seconds"], 0)))
    rows.append(("**exhaustive grid**", grid["trials"], f"{grid['epochs_spent']:.1f}", "100%", _num(grid["best"]),
                 _num(grid["trial_seconds"], 0)))
    path = write_result(out_dir, "search", result, rows,
                        ("search", "trials", "epochs spent", "share of grid's epochs", "best objective",
                         "trial seconds"))
    verdict = ("met" if total["goal_met"] else "not met")
    ratio = total["best_over_grid_best"]
    extra = [
        "", f"Goal ({result['goal']}): **{verdict}**: the protocol's best is "
        f"{_num(None if ratio is None else 100 * ratio)}% of the grid's for "
        f"{_share(total['epochs_spent'], grid)} of its epochs.",
        f"The protocol's final pick {final_pick} is the grid's cell ranked "
        f"{result['protocol_pick_rank_in_grid']} of {grid['trials']} (nearest learning rate).",
        "Epochs are counted over all training pairs (a trial's epochs x its data fraction).",
    ]
    if replay:
        extra += ["", f"Replayed from the grid's curves, not run: had phase 2 trained phase 1's best optimizer "
                  f"({replay['optimizer.name']}, lr {replay['optimizer.lr']:g}) x the {replay['cells']} losses at the "
                  f"grid's budget per cell (those are grid cells), the protocol would have reached "
                  f"{_num(replay['best'])} ({replay['best_loss']}) for {replay['epochs_spent']:.1f} epochs "
                  f"({_share(replay['epochs_spent'], grid)} of the grid's)."]
    if settles:
        extra += ["", "How early the grid's ranking settles (Spearman's rank correlation of each epoch's objective "
                  "with the last epoch's, over the grid's cells; where the final best cell ranks at that epoch):", "",
                  "| epoch | Spearman with final | final best cell's rank |", "|---|---|---|"]
        extra += [f"| {r['epoch']} | {r['spearman_with_final']:.2f} | {r['final_best_cell_rank']} |" for r in settles]
    if cells:
        extra += ["", "The grid's cells, objective at each epoch:", "",
                  "| loss | optimizer | lr | " + " | ".join(f"epoch {i + 1}" for i in range(len(cells[0]["curve"]))) + " |",
                  "|---|---|---|" + "---|" * len(cells[0]["curve"])]
        extra += [f"| {c['loss.name']} | {c['optimizer.name']} | {c['optimizer.lr']:g} | "
                  + " | ".join(_num(v) for v in c["curve"]) + " |" for c in cells]
    path.write_text(path.read_text() + "\n".join(extra) + "\n", encoding="utf-8")
    return path


def _share(spent: float, grid: dict) -> str:
    return f"{100 * spent / grid['epochs_spent']:.0f}%" if grid["epochs_spent"] else "-"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
