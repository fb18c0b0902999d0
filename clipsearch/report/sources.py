"""What a report reads from a phase folder (results/EXP/PHASE). No Ray, no plotly.

- trials.csv, best.json, phase.json: the phase's own files (clipsearch.results).
- optuna.db (phases 1 and 3): the distributions the search space declared, read-only.
- per-epoch histories: the phase's own history/trial_ID.jsonl (clipsearch.results), which
  the driver appends as results arrive. A trial reported again after a resume has the same
  epoch twice: the later report wins, as in the phase's ranking. Ray's own files (ray/) are
  never read: a phase run before clipsearch kept its histories shows no per-epoch curves.
- optional, the seed spread of the best configurations: results/EXP/confirm/confirm.json, which
  `clipsearch confirm` writes (read as noise.confirm_entries reads it; absent or unreadable: None).
- optional, for classification runs: `embeddings.npz` (arrays `embeddings` (n, d), `labels`
  (n,), optionally `class_names`) and `confusion_matrix.json` ({"class_names": [...],
  "matrix": [[...]]}, rows = true class), where a protocol writes them into the phase folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..results import (BEST_JSON, CONFUSION_JSON, EMBEDDINGS_NPZ, HISTORY_DIR, OPTUNA_DB, PHASE_JSON, TRIALS_CSV,
                       read_histories, read_json, read_trials_csv)
from .data import History, Row, trial_span

DEFAULT_METRIC = "objective"
_KEEP = ("epoch", "timestamp", "time_total_s")  # bookkeeping a history keeps besides metrics
#: `clipsearch confirm`'s output beside the phases (results/EXP/confirm/confirm.json); its names
#: belong in clipsearch.results.layout once that command lands there
CONFIRM_DIR, CONFIRM_JSON = "confirm", "confirm.json"


@dataclass
class PhaseData:
    phase_dir: Path
    rows: list[Row]                            # trials.csv
    state: dict[str, Any]                      # phase.json ({} when absent)
    best: dict[str, Any] | None                # best.json
    histories: dict[str, History]              # per epoch, from the phase's history/
    histories_from: str                        # where they were read, or why there are none
    order: list[str]                           # trial ids in the order the trials started
    finished: list[str] = field(default_factory=list)   # ... and in the order they ended
    declared: dict[str, dict[str, Any]] = field(default_factory=dict)   # from optuna.db
    embeddings: dict[str, np.ndarray] | None = None
    confusion: dict[str, Any] | None = None
    confirm: Any = None                        # confirm.json's content, None when absent or unreadable
    problems: list[str] = field(default_factory=list)   # optional files that could not be read

    @property
    def name(self) -> str:
        return self.phase_dir.name

    @property
    def metric(self) -> str:
        return self.state.get("metric") or DEFAULT_METRIC

    @property
    def mode(self) -> str:
        """The metric's direction, as the phase ranked its trials: "max" unless phase.json says "min"."""
        return "min" if self.state.get("mode") == "min" else "max"


def is_phase(folder: Path) -> bool:
    return (folder / TRIALS_CSV).is_file()


def load_phase(phase_dir: Path) -> PhaseData:
    phase_dir = Path(phase_dir)
    rows = read_trials_csv(phase_dir / TRIALS_CSV)
    state = _optional_json(phase_dir / PHASE_JSON) or {}
    best = _optional_json(phase_dir / BEST_JSON)
    histories, where = phase_histories(phase_dir / HISTORY_DIR)
    data = PhaseData(phase_dir, rows, state, best, histories, where, start_order(histories),
                     finish_order(histories), declared_distributions(phase_dir / OPTUNA_DB),
                     confirm=read_confirm(phase_dir))
    _load_extras(data)
    return data


def _optional_json(path: Path) -> dict | None:
    return read_json(path, path.name, "rerun the phase") if path.is_file() else None


def phase_histories(folder: Path) -> tuple[dict[str, History], str]:
    """Each trial's reported epochs from a phase's history/ folder, by trial id; and where they
    came from, or why there are none (the note a figure without them shows)."""
    if not folder.is_dir():
        return {}, (f"no {folder.name}/ folder in {folder.parent}: the phase was run before clipsearch kept "
                    f"its own per-trial histories")
    histories = {trial_id: _by_epoch(rows) for trial_id, rows in read_histories(folder).items()}
    histories = {k: v for k, v in histories.items() if v}
    if not histories:
        return {}, f"no trial reported an epoch in {folder}"
    return histories, f"clipsearch's per-trial records in {folder}"


def _by_epoch(reports: list[dict]) -> History:
    rows: dict[int, dict] = {}
    for report in reports:
        epoch = report.get("epoch")
        if isinstance(epoch, (int, float)) and math.isfinite(epoch):
            rows[int(epoch)] = {**{k: v for k, v in report.items() if _is_metric(k, v) or k in _KEEP},
                                "epoch": int(epoch)}
    return [rows[e] for e in sorted(rows)]


def _is_metric(key: str, value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not key.startswith(
        ("time_", "iterations_", "training_iteration", "pid", "timestamp"))


def declared_distributions(path: Path) -> dict[str, dict[str, Any]]:
    """Each parameter's distribution as the phase's Optuna study recorded it (Optuna's JSON),
    {} without a study. Read through sqlite3, read-only: opening it with Optuna could migrate
    the file's schema under a phase that may be resumed."""
    if not path.is_file():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT param_name, distribution_json FROM trial_params").fetchall()
        return {name: json.loads(text) for name, text in reversed(rows)}  # the first trial's wins
    except (sqlite3.Error, ValueError):
        return {}


def start_order(histories: dict[str, History]) -> list[str]:
    """Trial ids by start time: the first report's timestamp less the time it had trained."""
    return _by_span(histories, 0)


def finish_order(histories: dict[str, History]) -> list[str]:
    """Trial ids by the time of their last report."""
    return _by_span(histories, 1)


def _by_span(histories: dict[str, History], end: int) -> list[str]:
    def when(trial_id: str) -> float:
        span = trial_span(histories[trial_id])
        return math.inf if span is None else span[end]
    return sorted(histories, key=lambda t: (when(t), t))


def confirm_path(phase_dir: Path) -> Path:
    """results/EXP/confirm/confirm.json for the phase results/EXP/PHASE."""
    return Path(phase_dir).parent / CONFIRM_DIR / CONFIRM_JSON


def read_confirm(phase_dir: Path) -> Any:
    """confirm.json's content, or None: the file is another command's, and a report without it
    simply draws no seed band."""
    try:
        return json.loads(confirm_path(phase_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _load_extras(data: PhaseData) -> None:
    embeddings, confusion = data.phase_dir / EMBEDDINGS_NPZ, data.phase_dir / CONFUSION_JSON
    try:
        if embeddings.is_file():
            with np.load(embeddings, allow_pickle=False) as npz:
                data.embeddings = {k: npz[k] for k in npz.files}
        if confusion.is_file():
            data.confusion = json.loads(confusion.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        data.problems.append(f"{exc.__class__.__name__} reading an optional file of {data.phase_dir}: {exc}")
