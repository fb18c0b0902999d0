"""The noise floor of a phase's objective: its chance level, and one configuration's spread over
seeds. Pure: no plotly, no files.

- chance: the objective a random ranking scores on the phase's evaluation sets, which the
  evaluator reports with every epoch (`chance_objective` in history/, constant in a phase). A
  score near it means the trial learned nothing.
- seed spread: `clipsearch confirm` reruns the top configurations with several seeds and writes
  results/EXP/confirm/confirm.json. Read are a list of {"config": {...}, "objectives": [...],
  "mean": m, "ci95": [lo, hi]}, or an object holding such a list, whose entries may name their
  values as clipsearch.results.confirm writes them ({"trial_id", "decided": {...}, "seeds":
  {seed: value or None}, "mean", "sd", "ci95"} under "configs", with the confirmed "phase").
  The entry of the phase's best configuration gives a band, mean +- the seeds' standard
  deviation: two scores closer than that are not told apart by one run each.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable

from .data import History, Row, Unavailable

#: what a rerun of a configuration changes on purpose: never part of the comparison
_IGNORED = {"seed"}


def chance_key(metric: str) -> str:
    return f"chance_{metric}"


def chance_level(histories: dict[str, History], rows: list[Row], metric: str) -> float | None:
    """The chance level of `metric` the trials reported (history/, else trials.csv's last
    epoch), or None when none did. Constant in a phase; the median, should it ever vary."""
    key = chance_key(metric)
    values = [e[key] for h in histories.values() for e in h if _number(e.get(key))]
    values = values or [r[key] for r in rows if _number(r.get(key))]
    return float(statistics.median(values)) if values else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------ confirm.json

@dataclass(frozen=True)
class ConfirmEntry:
    """One configuration `clipsearch confirm` reran, with the objective of each seed."""

    config: dict[str, Any]            # flat, "optimizer.lr" keys
    objectives: tuple[float, ...]     # one per seed that finished
    mean: float
    ci95: tuple[float, float]
    std: float                        # the seeds' sample standard deviation (n - 1)
    trial_id: str | None = None       # the trial of `phase` whose configuration this is, when named
    phase: str | None = None


def confirm_entries(content: Any) -> list[ConfirmEntry]:
    """The well-formed entries of confirm.json's content: a list of entries, or an object holding
    one; [] for anything else (the file belongs to another command, whose format may move on)."""
    if isinstance(content, list):
        return _entries(content, None)
    if isinstance(content, dict):
        phase = content.get("phase") if isinstance(content.get("phase"), str) else None
        lists = (_entries(v, phase) for v in content.values() if isinstance(v, list))
        return next((found for found in lists if found), [])
    return []


def _entries(items: list, phase: str | None) -> list[ConfirmEntry]:
    return [e for e in (_entry(item, phase) for item in items) if e is not None]


def _entry(item: Any, phase: str | None) -> ConfirmEntry | None:
    if not isinstance(item, dict):
        return None
    config, objectives, ci = item.get("config", item.get("decided")), item.get("objectives"), item.get("ci95")
    if objectives is None and isinstance(item.get("seeds"), dict):  # seed -> value, None for a seed that errored
        objectives = [v for v in item["seeds"].values() if v is not None]
    if not (isinstance(config, dict) and isinstance(objectives, list) and len(objectives) >= 2
            and all(map(_number, objectives)) and _number(item.get("mean"))
            and isinstance(ci, list) and len(ci) == 2 and all(map(_number, ci))):
        return None
    std = float(item["sd"]) if _number(item.get("sd")) else statistics.stdev(objectives)
    trial_id = str(item["trial_id"]) if item.get("trial_id") is not None else None
    return ConfirmEntry(dict(_flat(config)), tuple(map(float, objectives)), float(item["mean"]),
                        (float(ci[0]), float(ci[1])), std, trial_id, phase)


def _flat(config: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def same_configuration(rerun: dict[str, Any], trial: dict[str, Any], searched: Iterable[str]) -> bool:
    """A confirm entry is a trial's configuration when it sets every parameter the phase searched
    that the trial set, and agrees with the trial on every key both hold (the seed aside)."""
    if any(k in trial and k not in rerun for k in searched):
        return False
    shared = (set(rerun) & set(trial)) - _IGNORED
    return bool(shared) and all(_equal(rerun[k], trial[k]) for k in shared)


def _equal(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b or str(a) == str(b)


@dataclass(frozen=True)
class SeedBand:
    """The phase's best configuration over several seeds: mean +- std is the band drawn."""

    trial_id: str          # the phase's best trial
    score: float           # its score, from one seed
    mean: float
    std: float
    seeds: int
    ci95: tuple[float, float]

    @property
    def low(self) -> float:
        return self.mean - self.std

    @property
    def high(self) -> float:
        return self.mean + self.std


def seed_band(entries: list[ConfirmEntry], rows: list[Row], searched: Iterable[str], metric: str,
              phase: str | None = None) -> SeedBand:
    """The band of the phase's best ranked trial, from the confirm entry of that trial (when the
    entry names the phase and trial) or of its configuration."""
    best = min((r for r in rows if r.get("rank") is not None), key=lambda r: r["rank"], default=None)
    if best is None:
        raise Unavailable("no trial was ranked")
    searched = list(searched)

    def of_best(e: ConfirmEntry) -> bool:
        if e.trial_id is not None and e.phase is not None and e.phase == phase:
            return e.trial_id == str(best["trial_id"])
        return same_configuration(e.config, best["config"], searched)

    entry = next((e for e in entries if of_best(e)), None)
    if entry is None:
        raise Unavailable(f"none of confirm.json's {len(entries)} configurations is this phase's best trial's "
                          f"({best['trial_id']})")
    return SeedBand(str(best["trial_id"]), float(best[f"best_{metric}"]), entry.mean, entry.std,
                    len(entry.objectives), entry.ci95)
