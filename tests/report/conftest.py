"""A hand-made phase: six trials whose every plotted value can be worked out by hand.

    trial  optimizer loss    lr     wd     momentum objective per epoch   end
    t1     adamw     clip    1e-4   1e-2   -        1, 2, 3, 4            ran all 4 epochs
    t2     adamw     sogclr  1e-3   1e-3   -        2, 3, 3.5, 3          ran all 4 epochs
    t3     radam     clip    1e-5   1e-1   -        5                     ASHA stopped it at epoch 1
    t4     radam     sogclr  1e-2   1e-4   -        1, 1.5                ASHA stopped it at epoch 2
    t5     sgd       clip    3e-4   3e-2   0.9      0.5, 1, 1.5, 2        ran all 4 epochs
    t6     sgd       sogclr  1e-3   1e-2   0.95     0.1                   errored in epoch 2

Started in the order t3, t4, t2, t1, t5, t6 (one every 100 s, 10 s an epoch), each ending before
the next starts. Ranked (reach, then score): t1, t2, t5, t4, t3. Under `mode: min` (the same
curves read as a loss) the scores are each trial's lowest value and the ranking is MIN_RANKS:
t5 (0.5), t1 (1), t2 (2), then t4 (1 at epoch 2), t3 (5 at epoch 1).

Compute: each trial took 10 s an epoch plus 5 s (trials.csv seconds), 2 s of training and 0.5 s of
evaluation an epoch (history/): 16 trial-epochs, 190 trial-seconds, 32 s training, 8 s evaluation.
The hand_phase fixture's phase.json: data.fraction 0.5 (8 epochs over all pairs), 0.5 GPU per
trial (95 GPU-seconds). The evaluator's chance level of the objective: CHANCE, every epoch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clipsearch.results import HISTORY_DIR, append_history, write_json, write_trials_csv

EPOCHS = 4
CURVES = {"t1": [1, 2, 3, 4], "t2": [2, 3, 3.5, 3], "t3": [5], "t4": [1, 1.5], "t5": [0.5, 1, 1.5, 2], "t6": [0.1]}
CONFIGS = {
    "t1": {"optimizer.name": "adamw", "loss.name": "clip", "optimizer.lr": 1e-4, "optimizer.weight_decay": 1e-2},
    "t2": {"optimizer.name": "adamw", "loss.name": "sogclr", "optimizer.lr": 1e-3, "optimizer.weight_decay": 1e-3},
    "t3": {"optimizer.name": "radam", "loss.name": "clip", "optimizer.lr": 1e-5, "optimizer.weight_decay": 1e-1},
    "t4": {"optimizer.name": "radam", "loss.name": "sogclr", "optimizer.lr": 1e-2, "optimizer.weight_decay": 1e-4},
    "t5": {"optimizer.name": "sgd", "loss.name": "clip", "optimizer.lr": 3e-4, "optimizer.weight_decay": 3e-2,
           "optimizer.momentum": 0.9},
    "t6": {"optimizer.name": "sgd", "loss.name": "sogclr", "optimizer.lr": 1e-3, "optimizer.weight_decay": 1e-2,
           "optimizer.momentum": 0.95},
}
STARTED = ["t3", "t4", "t2", "t1", "t5", "t6"]
RANKS = {"t1": 1, "t2": 2, "t5": 3, "t4": 4, "t3": 5, "t6": None}
MIN_RANKS = {"t5": 1, "t1": 2, "t2": 3, "t4": 4, "t3": 5, "t6": None}
CHANCE = 0.8
HAND_STATE = {"constants": {"data.fraction": 0.5, "seed": 0}, "resources": {"cpu": 1.0, "gpu": 0.5}}


def csv_row(trial_id: str, values: list[float], config: dict, rank: int | None, errored: bool = False,
            epochs: int = EPOCHS, mode: str = "max") -> dict:
    """A trials.csv row as clipsearch.results.trial_rows writes it (best: in `mode`'s direction)."""
    best = (min if mode == "min" else max)(range(len(values)), key=lambda i: values[i])
    return {"trial_id": trial_id, "status": "ERROR" if errored else "TERMINATED", "rank": rank,
            "epochs": len(values), "seconds": 10.0 * len(values) + 5.0, "num_failures": 0,
            "stopped_early": not errored and len(values) < epochs,
            **{f"config/{k}": v for k, v in {**config, "seed": 0}.items()},
            "objective": values[-1], "best_epoch": best + 1, "best_objective": values[best],
            "error": "RuntimeError: boom" if errored else ""}


def hand_rows(mode: str = "max") -> list[dict]:
    """The table as read_trials_csv returns it (config gathered under "config")."""
    rows = []
    ranks = MIN_RANKS if mode == "min" else RANKS
    for trial_id, values in CURVES.items():
        row = csv_row(trial_id, values, CONFIGS[trial_id], ranks[trial_id], errored=trial_id == "t6", mode=mode)
        row["config"] = {k[len("config/"):]: row.pop(k) for k in list(row) if k.startswith("config/")}
        row["error"] = row["error"] or None
        rows.append(row)
    return rows


def hand_histories() -> dict[str, list[dict]]:
    return {t: [{"epoch": e + 1, "objective": v} for e, v in enumerate(values)] for t, values in CURVES.items()}


def write_phase(phase_dir: Path, curves: dict[str, list[float]], configs: dict[str, dict], ranks: dict,
                errored: set[str] = frozenset(), started: list[str] | None = None, history: bool = True,
                state: dict | None = None) -> Path:
    """A phase folder as clipsearch writes it: trials.csv, best.json, phase.json and (with
    history) history/trial_ID.jsonl, one line per reported epoch as the driver appends it."""
    phase_dir.mkdir(parents=True, exist_ok=True)
    mode = (state or {}).get("mode", "max")
    rows = [csv_row(t, v, configs[t], ranks.get(t), errored=t in errored, mode=mode) for t, v in curves.items()]
    write_trials_csv(phase_dir / "trials.csv", sorted(rows, key=lambda r: (r["rank"] is None, r["rank"] or 0)))
    write_json(phase_dir / "phase.json", {"phase": phase_dir.name, "experiment": phase_dir.parent.name,
                                          "metric": "objective", **(state or {})})
    ranked = sorted((r for r in rows if r["rank"]), key=lambda r: r["rank"])
    if ranked:
        top = ranked[0]
        write_json(phase_dir / "best.json", {"trial_id": top["trial_id"], "score": top["best_objective"],
                                             "compared_at_epoch": top["epochs"], "best_epoch": top["best_epoch"],
                                             "decided": configs[top["trial_id"]]})
    if history:
        for start, trial_id in enumerate(started or list(curves)):
            _write_history(phase_dir / HISTORY_DIR, trial_id, curves[trial_id], started=1000.0 + 100 * start)
    return phase_dir


def _write_history(folder: Path, trial_id: str, values: list[float], started: float) -> None:
    """A trial's epochs as Tune hands them to the driver's TrialHistory: metrics and Tune's bookkeeping."""
    for e, v in enumerate(values):
        append_history(folder, trial_id, {"epoch": e + 1, "objective": v, "chance_objective": CHANCE,
                                          "train_seconds": 2.0, "eval_seconds": 0.5, "trial_id": trial_id,
                                          "time_total_s": 10.0 * (e + 1), "timestamp": started + 10.0 * (e + 1),
                                          "done": False, "hostname": "vm"})


@pytest.fixture
def hand_phase(tmp_path) -> Path:
    """results/exp/phase1 holding the hand-made table."""
    return write_phase(tmp_path / "exp" / "phase1", CURVES, CONFIGS, RANKS, errored={"t6"}, started=STARTED,
                       state=HAND_STATE)
