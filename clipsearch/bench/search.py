"""Search efficiency: the quick three-phase protocol against two anchors over the same space, on
the embedded pairs with the quick preset's tiny towers, in one command: the exhaustive grid, and
random search given the same epochs; the protocol repeated over several search seeds.

The space (search_spaces/bench_search/): 3 losses x 3 optimizers x 2 learning rates.
- grid.yaml: every one of the 18 cells, 10 epochs on all the training pairs, no early stopping;
- phase1..3_quick.yaml: the protocol's shape on that space: TPE on half of the pairs, a grid of
  phase 1's best optimizer x the losses x the learning rates on all of them, each ranked after
  250 updates (where the grid's ranking has settled), then the long run of phase 2's best on all
  the pairs for 22 epochs, twice a grid cell: phase 3 is the protocol's long run, and what phases
  1 and 2 save goes there. In all at most 44 of the grid's 180 epochs.

A search seed is the seed of the protocol's Optuna samplers (Options.search_seed), nothing else:
every trial trains with the config's seed, so a trial with a grid cell's config trains exactly as
that cell did, and two seeds differ only by the search's own decisions.

What is compared: the best validation objective any trial of each search reached (at the
trial's best epoch), and the epochs each spent, counted in epochs over all the pairs (a trial's
epochs x its data fraction: an epoch on 20% of the pairs is a fifth of one). The issue's goal, on
the medians over the seeds: within 1% of the grid's best for at most a quarter of its epochs,
and above random search at the same epochs.

Random search is replayed, not trained: it draws the grid's cells at random, each at the grid's
budget, and a cell's training is deterministic given the training seed, so each draw reports
exactly the grid's recorded curve for that cell (`random_search_replay`). Every table and the
JSON say so.

Each search is a normal experiment folder with its MLflow runs: results/NAME/grid, and for search
seed K the experiment NAME-seedK in results/NAME/NAME-seedK/phase1..3. A second run of the command
goes on with what is there (finished phases kept).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

from .. import tracking
from ..results import HISTORY_DIR, PHASE_JSON, TRIALS_CSV, read_json, read_trials_csv
from ..tune.phases import PHASES, Options, grid_plan, resumed_plan, run_or_keep, run_protocol
from ..tune.runner import AfterPhase
from ..tune.space import SHIPPED_SPACES, load_space
from .common import environment, write_result

SPACES = SHIPPED_SPACES / "bench_search"
GRID = "grid"
#: the keys both searches turn
SEARCHED = ("loss.name", "optimizer.name", "optimizer.lr")
#: the goal the issue sets: the protocol's best within this share of the grid's ...
OBJECTIVE_TOLERANCE = 0.01
#: ... for at most this share of the grid's epochs
EPOCH_SHARE = 0.25
#: the objective of a model that learned nothing, on the embedded default (README, metrics table)
CHANCE_OBJECTIVE = 3.4
#: draws behind random search's expected best, a reference steadier than 5 seeds
REFERENCE_DRAWS = 1000
REPLAYED = "replayed from the grid's curves"
RANDOM_SEARCH_HOW = ("for search seed K, the grid's cells drawn uniformly without replacement with random.Random(K), "
                     "each at the grid's budget, until seed K's protocol's epochs are spent (the cell cut off counts "
                     "the epochs it reached)")


def seed_dir(exp_dir: Path, seed: int) -> Path:
    """Search seed SEED's protocol: the experiment NAME-seedSEED inside results/NAME."""
    return exp_dir / f"{exp_dir.name}-seed{seed}"


def protocol_options(exp_dir: Path, seed: int, tracking_uri: str, after_phase: AfterPhase | None = None) -> Options:
    folder = seed_dir(exp_dir, seed)
    return Options(name=folder.name, quick=True, spaces_dir=SPACES, results=exp_dir, search_seed=seed,
                   tracking_uri=tracking_uri, resume=folder.exists(), after_phase=after_phase)


def run_search_benchmark(name: str = "bench-search", results: Path = Path("results"),
                         out_dir: Path = Path("results/benchmarks"), seeds: int = 5,
                         after_phase: AfterPhase | None = None) -> Path:
    """Run (or go on with) the protocol for search seeds 0..SEEDS-1 and the grid under
    results/NAME, each phase followed by `after_phase(phase_dir)` where given (the CLI's: its
    report); write OUT/search.*."""
    from ..tune import cluster

    exp_dir = results / name
    # one MLflow store for the grid and every seed: the grid's (results/mlflow.db)
    grid_opts = Options(name=name, quick=True, spaces_dir=SPACES, results=results, after_phase=after_phase)
    uri = tracking.default_tracking_uri(results)
    grid_dir = (exp_dir / GRID).resolve()
    grid = resumed_plan(grid_dir, after_phase) or grid_plan(load_space(SPACES / "grid.yaml", GRID), grid_opts,
                                                            grid_dir, "bench-grid")
    wall: dict[str, float] = {}
    with cluster.ray_session(None):
        for seed in range(seeds):
            opts = protocol_options(exp_dir, seed, uri, after_phase)
            if opts.resume:
                print(f"bench search: going on with {seed_dir(exp_dir, seed)} (finished phases kept)",
                      file=sys.stderr)
            started = time.perf_counter()
            for outcome in run_protocol(opts):
                print(f"bench search: seed {seed}: {outcome.phase} done", file=sys.stderr)
            wall[f"protocol_seed{seed}"] = time.perf_counter() - started
        started = time.perf_counter()
        run_or_keep(grid)
        wall["grid"] = time.perf_counter() - started
    return write_search_result(exp_dir, out_dir, seeds, wall)


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
    cells = [{**{k: r.config.get(k) for k in SEARCHED}, "data.fraction": float(r.config.get("data.fraction", 1.0)),
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


# ------------------------------------------------------------------------------ random search, replayed

def random_search_replay(cells: list[dict[str, Any]], epoch_budget: float, seed: int) -> dict[str, Any]:
    """Random search over the grid's cells given EPOCH_BUDGET epochs (over all pairs), replayed
    on the cells' recorded curves: cells drawn uniformly without replacement (random.Random(seed)),
    each run at the grid's budget until the budget is spent; the cell that would overrun runs the
    whole epochs that fit and counts its best over those. Its best: the best objective it saw."""
    # drawn from the cells in a fixed order of their configs: what is drawn depends on the seed alone
    pool = sorted(cells, key=lambda c: tuple(str(c[k]) for k in SEARCHED))
    spent, runs = 0.0, []
    for cell in random.Random(seed).sample(pool, len(pool)):
        cost = cell.get("data.fraction", 1.0)  # one of its epochs, in epochs over all pairs
        # the epsilon keeps a budget that is a whole number of epochs from losing one to rounding
        fit = min(len(cell["curve"]), int((epoch_budget - spent) / cost + 1e-9))
        if fit <= 0:
            break
        reached = [v for v in cell["curve"][:fit] if v is not None]
        spent += fit * cost
        runs.append({**{k: cell[k] for k in SEARCHED}, "epochs": fit, "best": max(reached, default=None)})
        if fit < len(cell["curve"]):
            break
    seen = [run["best"] for run in runs if run["best"] is not None]
    return {"seed": seed, "epoch_budget": round(epoch_budget, 3), "epochs_spent": round(spent, 3),
            "best": max(seen, default=None), "cells": runs, "how": REPLAYED}


def expected_random_best(cells: list[dict[str, Any]], epoch_budget: float, grid_best: float | None,
                         draws: int = REFERENCE_DRAWS) -> dict[str, Any]:
    """Random search's best over DRAWS replays (seeds 0..DRAWS-1) at one budget: its mean, its
    median, and the share of draws within the goal's tolerance of the grid's best."""
    import numpy as np

    bests = [random_search_replay(cells, epoch_budget, seed)["best"] for seed in range(draws)]
    got = np.array([b for b in bests if b is not None], dtype=float)
    near = (None if not grid_best or not got.size
            else float(np.mean(got >= (1 - OBJECTIVE_TOLERANCE) * grid_best)))
    return {"draws": draws, "epoch_budget": round(epoch_budget, 3), "how": REPLAYED,
            "mean_best": float(got.mean()) if got.size else None,
            "median_best": float(np.median(got)) if got.size else None, "share_within_tolerance_of_grid": near}


# ------------------------------------------------------------------------------ over the seeds

def spread(values: list[float | None]) -> dict[str, Any]:
    """The median and the spread of one figure over the seeds: n (seeds with a value), min, max,
    the quartiles (numpy's linear interpolation) and the sample standard deviation."""
    import numpy as np

    got = np.array([v for v in values if v is not None], dtype=float)
    if not got.size:
        return {"n": 0, "median": None, "min": None, "max": None, "q25": None, "q75": None, "std": None}
    q25, median, q75 = (float(q) for q in np.percentile(got, [25, 50, 75]))
    return {"n": int(got.size), "median": median, "min": float(got.min()), "max": float(got.max()),
            "q25": q25, "q75": q75, "std": float(got.std(ddof=1)) if got.size > 1 else 0.0}


def seed_figures(seed: int, stages: dict[str, dict], grid: dict, grid_rows: list[dict],
                 cells: list[dict[str, Any]]) -> dict[str, Any]:
    """One search seed: its protocol's stages and totals, its final pick's rank in the grid, and
    random search given the epochs it spent (replayed, with the same seed)."""
    total = compare(stages, grid)
    pick = stages["phase3"]["best_config"]
    rand = random_search_replay(cells, total["epochs_spent"], seed)
    return {"seed": seed, "stages": stages, "total": total, "final_pick": pick,
            "final_pick_rank_in_grid": grid_rank(grid_rows, pick), "random_search": rand,
            "beats_random": _above(total["best"], rand["best"])}


def over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians and spreads over every seed, misses included, and the verdict on the medians:
    the goal (median best within tolerance of the grid's, median epoch share at most EPOCH_SHARE;
    a seed without a best fails it) and the median best above random search's."""
    figures = {key: spread([s["total"][key] for s in per_seed])
               for key in ("best", "epochs_spent", "epoch_share_of_grid", "best_over_grid_best")}
    rand = spread([s["random_search"]["best"] for s in per_seed])
    best, share, ratio = (figures[k]["median"] for k in ("best", "epoch_share_of_grid", "best_over_grid_best"))
    goal = bool(figures["best"]["n"] == len(per_seed) and share is not None and ratio is not None
                and share <= EPOCH_SHARE and ratio >= 1 - OBJECTIVE_TOLERANCE)
    median = {"best": best, "epochs_spent": figures["epochs_spent"]["median"], "epoch_share_of_grid": share,
              "best_over_grid_best": ratio, "random_search_best": rand["median"], "goal_met": goal,
              "beats_random": _above(best, rand["median"]), "over": f"median of {len(per_seed)} search seeds"}
    median["verdict_met"] = median["goal_met"] and median["beats_random"]
    return {"median": median, "spread": figures, "random_search_spread": rand,
            "seeds_meeting_goal": sum(s["total"]["goal_met"] for s in per_seed),
            "seeds_beating_random": sum(s["beats_random"] for s in per_seed)}


def _above(best: float | None, other: float | None) -> bool:
    return best is not None and (other is None or best > other)


# ------------------------------------------------------------------------------ the result files

def _grid_records(exp_dir: Path) -> list:
    from ..tune.runner import collect_records

    state = read_json(exp_dir / GRID / PHASE_JSON, "the grid's phase.json", "run clipsearch bench search again")
    return collect_records(state["experiment_path"], exp_dir / GRID / HISTORY_DIR)


def _protocol_stages(folder: Path) -> dict[str, dict]:
    return {phase: stage_figures(read_trials_csv(folder / phase / TRIALS_CSV)) for phase in PHASES}


def write_search_result(exp_dir: Path, out_dir: Path, seeds: int, wall: dict[str, float],
                        grid_records: list | None = None) -> Path:
    """OUT/search.json and OUT/search.md from results/NAME: the grid, and the protocol of each
    search seed 0..SEEDS-1 (every one: a seed that misses is listed and counted)."""
    grid_rows = read_trials_csv(exp_dir / GRID / TRIALS_CSV)
    grid = stage_figures(grid_rows)
    cells = grid_curves(_grid_records(exp_dir) if grid_records is None else grid_records)
    per_seed = [seed_figures(seed, _protocol_stages(seed_dir(exp_dir, seed)), grid, grid_rows, cells)
                for seed in range(seeds)]
    summary = over_seeds(per_seed)
    result = {
        "benchmark": "search_efficiency", "environment": environment(),
        "command": f"clipsearch bench search --name {exp_dir.name} --seeds {seeds}",
        "space": "search_spaces/bench_search/ (3 losses x 3 optimizers x 2 learning rates)",
        "epochs_counted_as": "each trial's epochs x its data fraction (epochs over all training pairs)",
        "goal": f"best within {OBJECTIVE_TOLERANCE:.0%} of the grid's for at most {EPOCH_SHARE:.0%} of its epochs",
        "verdict": "on the medians over every search seed: the goal met, and the best above random search's at the "
                   "same epochs",
        "search_seed_is": ("the seed of the protocol's Optuna samplers only; every trial trains with the config's "
                           "seed; each seed's protocol is trained, in results/NAME/NAME-seedK"),
        "seeds": seeds, "chance_objective": CHANCE_OBJECTIVE,
        # "total" is what clipsearch bench summary reads: the medians
        "protocol": {"median": summary["median"], "total": summary["median"], "spread": summary["spread"],
                     "seeds_meeting_goal": summary["seeds_meeting_goal"],
                     "seeds_beating_random": summary["seeds_beating_random"], "per_seed": per_seed},
        "random_search": {
            "how": f"{REPLAYED}, not trained: {RANDOM_SEARCH_HOW}; each seed's under protocol.per_seed",
            "spread": summary["random_search_spread"],
            "expected_at_median_budget": expected_random_best(cells, summary["median"]["epochs_spent"] or 0.0,
                                                              grid["best"])},
        "grid": grid, "grid_ranking_by_epoch": ranking_settles(cells), "grid_cells": cells,
        "wall_seconds_of_this_invocation": {k: round(v, 1) for k, v in wall.items()},
    }
    path = write_result(out_dir, "search", result, _seed_rows(per_seed, summary, grid), SEED_TABLE)
    path.write_text(path.read_text() + "\n".join(_notes(result)) + "\n", encoding="utf-8")
    return path


SEED_TABLE = ("search seed", "protocol best", "epochs spent", "share of grid's epochs", "best / grid's best",
              f"random search best, same epochs ({REPLAYED})", "goal met", "above random search")


def _seed_rows(per_seed: list[dict], summary: dict, grid: dict) -> list[tuple]:
    """One row per seed, then the median and the spread over all of them, then the grid."""
    rows = [(f"seed {s['seed']}", _num(s["total"]["best"]), f"{s['total']['epochs_spent']:.1f}",
             _pct(s["total"]["epoch_share_of_grid"]), _pct(s["total"]["best_over_grid_best"]),
             _replayed(_num(s["random_search"]["best"])), _yes(s["total"]["goal_met"]), _yes(s["beats_random"]))
            for s in per_seed]
    fig, rand, median = summary["spread"], summary["random_search_spread"], summary["median"]
    rows.append(("**median**", _num(median["best"]), _num(median["epochs_spent"], 1),
                 _pct(median["epoch_share_of_grid"]), _pct(median["best_over_grid_best"]),
                 _replayed(_num(rand["median"])), "**met**" if median["goal_met"] else "**not met**",
                 _yes(median["beats_random"])))
    for label, low, high in (("min - max", "min", "max"), ("IQR (25%-75%)", "q25", "q75")):
        rows.append((label, _range(fig["best"], low, high, _num), _range(fig["epochs_spent"], low, high, _num, 1),
                     _range(fig["epoch_share_of_grid"], low, high, _pct),
                     _range(fig["best_over_grid_best"], low, high, _pct), _replayed(_range(rand, low, high, _num)),
                     "", ""))
    rows.append(("**exhaustive grid**", _num(grid["best"]), f"{grid['epochs_spent']:.1f}", "100%", "100%", "-",
                 "", ""))
    return rows


def _notes(result: dict) -> list[str]:
    """What follows the seeds' table in search.md: the verdicts, the references, each seed's
    phases and draws, how early the grid's ranking settles, the grid's cells."""
    protocol, grid = result["protocol"], result["grid"]
    median, n = protocol["median"], result["seeds"]
    expected = result["random_search"]["expected_at_median_budget"]
    lines = [
        "", f"Verdict ({result['verdict']}): **{'met' if median['verdict_met'] else 'not met'}**.",
        f"Goal ({result['goal']}): **{'met' if median['goal_met'] else 'not met'}**, judged on the medians over "
        f"all {n} search seeds: the median best {_num(median['best'])} is {_pct(median['best_over_grid_best'])} of the "
        f"grid's {_num(grid['best'])}, for a median {_num(median['epochs_spent'], 1)} epochs, "
        f"{_pct(median['epoch_share_of_grid'])} of the grid's {grid['epochs_spent']:.1f}. "
        f"{protocol['seeds_meeting_goal']} of {n} seeds met the goal on their own; every seed is in the table, "
        "the misses too.",
        f"Against random search at the same epochs: the protocol's median best {_num(median['best'])} is "
        f"**{'above' if median['beats_random'] else 'not above'}** random search's median "
        f"{_num(median['random_search_best'])}; the protocol was above it in {protocol['seeds_beating_random']} of {n} "
        "seeds.",
        f"Random search is {REPLAYED}, not trained: {RANDOM_SEARCH_HOW}. "
        "A cell trains the same way each time (same config, same training seed), so a draw reports exactly the "
        "grid's recorded curve for it.",
        f"Random search's expected best over {expected['draws']:,} draws at the median budget "
        f"({expected['epoch_budget']:.1f} epochs), {REPLAYED}: mean {_num(expected['mean_best'])}, median "
        f"{_num(expected['median_best'])}; {_pct(expected['share_within_tolerance_of_grid'])} of the draws come "
        f"within {OBJECTIVE_TOLERANCE:.0%} of the grid's best.",
        f"Chance level of the objective on the embedded default: {CHANCE_OBJECTIVE} (README, metrics): a search "
        "that ends near it found nothing.",
        f"A search seed is {result['search_seed_is']}. Epochs are counted over all training pairs (a trial's epochs "
        "x its data fraction).",
    ]
    return lines + _seed_detail(protocol["per_seed"], grid) + _grid_detail(result)


def _seed_detail(per_seed: list[dict], grid: dict) -> list[str]:
    phase_cols = " | ".join(f"{phase}: trials, epochs, best" for phase in PHASES)
    lines = ["", "Each seed's protocol (its final pick: phase 3's best, loss / optimizer / lr; its rank among the "
             "grid's cells by the nearest learning rate):", "", f"| seed | {phase_cols} | final pick | rank in grid |",
             "|---|" + "---|" * (len(PHASES) + 2)]
    for s in per_seed:
        stages = " | ".join(f"{st['trials']}, {st['epochs_spent']:.1f}, {_num(st['best'])}"
                            for st in s["stages"].values())
        pick = s["final_pick"]
        pick = (f"{pick['loss.name']} / {pick['optimizer.name']} / {pick['optimizer.lr']:.3g}"
                if all(pick.get(k) is not None for k in SEARCHED) else "-")
        lines.append(f"| {s['seed']} | {stages} | {pick} | {s['final_pick_rank_in_grid'] or '-'} "
                     f"of {grid['trials']} |")
    lines += ["", f"Random search per seed, {REPLAYED} (the cells in the order drawn, loss / optimizer / lr "
              "(epochs run)):", "", "| seed | epoch budget | cells | epochs spent | best |", "|---|---|---|---|---|"]
    for s in per_seed:
        r = s["random_search"]
        drawn = ", ".join(f"{c['loss.name']} / {c['optimizer.name']} / {c['optimizer.lr']:g} ({c['epochs']})"
                          for c in r["cells"])
        lines.append(f"| {s['seed']} | {r['epoch_budget']:.1f} | {drawn or '-'} | {r['epochs_spent']:.1f} | "
                     f"{_num(r['best'])} |")
    return lines


def _grid_detail(result: dict) -> list[str]:
    settles, cells = result["grid_ranking_by_epoch"], result["grid_cells"]
    lines = []
    if settles:
        lines += ["", "How early the grid's ranking settles (Spearman's rank correlation of each epoch's objective "
                  "with the last epoch's, over the grid's cells; where the final best cell ranks at that epoch):", "",
                  "| epoch | Spearman with final | final best cell's rank |", "|---|---|---|"]
        lines += [f"| {r['epoch']} | {r['spearman_with_final']:.2f} | {r['final_best_cell_rank']} |" for r in settles]
    if cells:
        epochs = len(cells[0]["curve"])
        lines += ["", "The grid's cells, objective at each epoch:", "",
                  "| loss | optimizer | lr | " + " | ".join(f"epoch {i + 1}" for i in range(epochs)) + " |",
                  "|---|---|---|" + "---|" * epochs]
        lines += [f"| {c['loss.name']} | {c['optimizer.name']} | {c['optimizer.lr']:g} | "
                  + " | ".join(_num(v) for v in c["curve"]) + " |" for c in cells]
    return lines


def _range(figure: dict, low: str, high: str, fmt, *args) -> str:
    return "-" if figure[low] is None else f"{fmt(figure[low], *args)} - {fmt(figure[high], *args)}"


def _replayed(text: str) -> str:
    return text if text == "-" else f"{text} (replayed)"


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _pct(value: float | None) -> str:
    # one decimal: 99.5% of the grid's best is within the goal's 1%, 98.5% is not
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
