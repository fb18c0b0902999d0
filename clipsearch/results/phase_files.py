"""A phase's files under results/EXP/PHASE: trials.csv, best.json, phase.json, history/. No Ray.

trials.csv: one row per trial: trial_id, status, rank (blank when not ranked), epochs (the
last epoch reached), seconds, num_failures, stopped_early, the trial's config as `config/KEY`
columns, the metrics of its last epoch, best_epoch and the metrics of its best epoch as
`best_METRIC`, and the error of an errored trial.
best.json: the best trial's config and metrics, what the next phase reads.
phase.json: what the driver needs to resume the phase (settings, paths, the MLflow parent run).
history/trial_ID.jsonl: every epoch a trial reported, one JSON object a line, appended by the
driver as the results arrive (a retried trial may report an epoch again: the later line wins).

The first three are written through clipsearch.results.atomic (a temporary file beside the
target, renamed into place), so a reader (or the next phase) never sees half a file, even if the
driver dies mid-write. The names are clipsearch.results.layout's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

from ..errors import InputError
from .atomic import atomic_write_text
from .layout import OPTUNA_DB, PHASE_JSON
from .ranking import RULE, Ranked, TrialRecord, rank_trials

#: what train() reports that is bookkeeping rather than a result worth a column of its own
_NOT_FINAL = {"best_objective", "best_epoch"}


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars from Ray's dataframes
        return value.item()
    return str(value)


def read_json(path: Path, what: str, fix: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} not found", where=str(path), fix=fix) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} is unreadable ({exc.__class__.__name__})", where=str(path), fix=fix) from None


# ------------------------------------------------------------------------------ the Optuna study

def phase_study(phase_dir: Path, state: dict | None = None) -> tuple[str, str] | None:
    """Where a phase's Optuna study is: (storage, study name) from its phase.json (`state`, or
    read from the folder), None for a phase without one (a grid, a pbt phase's random draws, or
    no phase.json). storage: a database URL (`sqlite:///...`, `postgresql://...`) or a journal
    file's path; a phase run before the experiment had one storage: its own PHASE/optuna.db."""
    if state is None:
        path = Path(phase_dir) / PHASE_JSON
        if not path.is_file():
            return None
        state = read_json(path, "phase.json", "delete the phase folder and start again")
    if state.get("search", "grid" if "grid" in state else "optuna") != "optuna":
        return None
    storage = state.get("optuna_storage") or f"sqlite:///{Path(phase_dir).resolve() / OPTUNA_DB}"
    return storage, state.get("study_name") or f"{state['experiment']}-{state['phase']}"


# ------------------------------------------------------------------------------ history/

def append_history(folder: Path, trial_id: str, row: dict) -> None:
    """One reported epoch of a trial, appended to folder/trial_ID.jsonl and flushed."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(_history_file(folder, trial_id), "a", encoding="utf-8") as out:
        out.write(json.dumps(row, default=_jsonable) + "\n")


def read_history(folder: Path, trial_id: str) -> list[dict]:
    """The epochs append_history wrote for one trial, in the order they arrived (none: [])."""
    return _read_history_file(_history_file(Path(folder), trial_id))


def read_histories(folder: Path) -> dict[str, list[dict]]:
    """Every trial's epochs in a history/ folder, by trial id ({} without the folder)."""
    folder = Path(folder)
    files = sorted(folder.glob(f"{_HISTORY_PREFIX}*.jsonl")) if folder.is_dir() else []
    return {path.stem.removeprefix(_HISTORY_PREFIX): _read_history_file(path) for path in files}


_HISTORY_PREFIX = "trial_"


def _history_file(folder: Path, trial_id: str) -> Path:
    return folder / f"{_HISTORY_PREFIX}{trial_id}.jsonl"


def _read_history_file(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:  # a driver killed mid-write leaves at most its last line cut short
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------ trials.csv

def trial_rows(records: list[TrialRecord], ranked: list[Ranked], metric: str, epochs: int,
               mode: str = "max") -> list[dict]:
    ranks = {r.record.trial_id: r for r in ranked}
    rows = []
    for record in records:
        r = ranks.get(record.trial_id)
        last = record.history[-1] if record.history else {}
        best = record.best_row(metric, mode)
        row = {"trial_id": record.trial_id, "status": record.status, "rank": r.rank if r else None,
               "epochs": record.reach, "seconds": round(record.seconds, 3), "num_failures": record.num_failures,
               "stopped_early": record.status == "TERMINATED" and record.reach < epochs}
        row |= {f"config/{k}": v for k, v in record.config.items()}
        row |= {k: v for k, v in last.items() if k not in _NOT_FINAL and k != "epoch"}
        row |= {"best_epoch": best.get("epoch")}
        # the best epoch's metrics (the training ones only where one is the phase's metric)
        row |= {f"best_{k}": v for k, v in best.items()
                if k not in _NOT_FINAL and k != "epoch" and (not k.startswith("train_") or k == metric)}
        row["error"] = record.error
        rows.append(row)
    return sorted(rows, key=lambda row: (row["rank"] is None, row["rank"] or 0))


_LEAD = ("trial_id", "status", "rank", "epochs", "seconds", "num_failures", "stopped_early")


def write_trials_csv(path: Path, rows: list[dict]) -> None:
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen]
    config = sorted(c for c in seen if c.startswith("config/"))
    metrics = [c for c in seen if c not in _LEAD and c not in config and c != "error"]
    columns = [*_LEAD, *config, *metrics, "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


#: columns that hold text even when it looks like a number (trial ids such as "12e45_00001")
_TEXT_COLUMNS = {"trial_id", "status", "error"}
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-?inf$|^nan$")


def read_trials_csv(path: Path) -> list[dict]:
    """trials.csv with typed cells (numbers, booleans, None for blanks); config keys gathered
    under "config" as a flat dict."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no trials.csv", where=str(path), fix="run the previous phase first") from None
    rows = []
    for raw in csv.DictReader(io.StringIO(text)):
        row = {k: v if k in _TEXT_COLUMNS else _parse(v) for k, v in raw.items() if not k.startswith("config/")}
        row["config"] = {k[len("config/"):]: _parse(v) for k, v in raw.items() if k.startswith("config/") and v != ""}
        rows.append(row)
    return rows


def _parse(cell: str | None) -> Any:
    """A cell as written by _cell: int, float (repr), bool, None for blank, else text."""
    if cell is None or cell == "":
        return None
    if cell in ("True", "False"):
        return cell == "True"
    if _INT.match(cell):
        return int(cell)
    if _FLOAT.match(cell):
        return float(cell)
    return cell


def ranked_rows(rows: list[dict]) -> list[dict]:
    """The ranked trials of a trials.csv, best first."""
    return sorted((r for r in rows if r.get("rank") is not None), key=lambda r: r["rank"])


# ------------------------------------------------------------------------------ best.json

def best_summary(phase: str, experiment: str, metric: str, records: list[TrialRecord],
                 searched: list[str], mode: str = "max") -> dict | None:
    """best.json's content: the best trial by the ranking rule (in `mode`'s direction), or None
    when none ranked."""
    ranked = rank_trials(records, metric, mode)
    if not ranked:
        return None
    top = ranked[0]
    best = top.record.best_row(metric, mode)
    return {
        "phase": phase, "experiment": experiment, "metric": metric, "mode": mode, "rule": RULE,
        "trial_id": top.record.trial_id, "compared_at_epoch": top.reach, "score": top.score,
        "best_epoch": best.get("epoch"), "best_metrics": _clean(best),
        "final_metrics": _clean(top.record.history[-1]),
        "config": top.record.config,
        "searched": searched,
        "decided": {k: v for k, v in top.record.config.items() if k in searched},
        "resolved_config": None,  # filled in by the driver, which knows the base config
        "checkpoint": top.record.checkpoint,
        "trials": len(records), "ranked": len(ranked),
        "errored": sum(r.status == "ERROR" for r in records),
    }


def _clean(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
