"""Whether a search's winner stays ahead when its top configurations train again with new
seeds: each configuration's mean over the seeds, its Student t 95% interval, and the verdict.
No Ray: `clipsearch.tune.confirm` runs the seeds, this module judges them and writes
results/EXP/confirm/confirm.json and confirm.md (which a report can read).

The verdict's rule: the winner (the best mean) leads the runner-up (the next best mean)
*clearly* when the difference of their means is larger than their pooled standard deviation
over seeds, the spread one training seed alone gives (Cohen's d > 1). Otherwise the lead is
within seed noise: the search's choice between the two is not confirmed at this many seeds.
The intervals are shown beside it, not used by it: with 3 seeds a 95% t interval is
mean +- 4.30 sd / sqrt(3), about +- 2.5 sd, and two such intervals overlap for most real leads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .atomic import atomic_write_text
from .layout import CONFIRM_JSON, CONFIRM_MD
from .phase_files import write_json

LEVEL = 0.95
RULE = ("the winner (best mean over the new seeds) leads clearly when its lead over the runner-up (next best "
        "mean) is larger than their pooled standard deviation over seeds (Cohen's d > 1)")


@dataclass(frozen=True)
class SeedSummary:
    """One configuration over its seeds: n values, their mean, sample standard deviation and
    the Student t interval of the mean at LEVEL (sd and interval None below 2 values)."""

    values: tuple[float, ...]
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None

    @property
    def n(self) -> int:
        return len(self.values)


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided Student t quantile: t such that P(|T| <= t) = level at `df` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def summarize(values: Sequence[float], level: float = LEVEL) -> SeedSummary:
    """Mean, sample sd (n - 1) and the t interval mean +- t(n-1) sd / sqrt(n) of the values."""
    values = tuple(float(v) for v in values)
    n = len(values)
    if n == 0:
        return SeedSummary(values, None, None, None, None)
    mean = sum(values) / n
    if n < 2:
        return SeedSummary(values, mean, None, None, None)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1, level) * sd / math.sqrt(n)
    return SeedSummary(values, mean, sd, mean - half, mean + half)


def pooled_sd(a: SeedSummary, b: SeedSummary) -> float:
    """sqrt(((n_a - 1) sd_a^2 + (n_b - 1) sd_b^2) / (n_a + n_b - 2)): one seed's spread, from both."""
    return math.sqrt(((a.n - 1) * a.sd ** 2 + (b.n - 1) * b.sd ** 2) / (a.n + b.n - 2))


@dataclass(frozen=True)
class Verdict:
    """Winner and runner-up (indices into the judged configurations), the lead, the pooled sd,
    clear (None: undecided) and the sentence that says it."""

    winner: int | None
    runner_up: int | None
    lead: float | None
    spread: float | None
    clear: bool | None
    text: str


def verdict(summaries: Sequence[SeedSummary], labels: Sequence[str], mode: str = "max") -> Verdict:
    """The rule of the module docstring over configurations `summaries`, called `labels` in the
    sentence (e.g. "#1 (trial a1)", in the phase's rank order). mode: "max" or "min", as the
    phase's metric is maximised or minimised."""
    judged = [i for i, s in enumerate(summaries) if s.mean is not None]
    if not judged:
        return Verdict(None, None, None, None, None, "undecided: no configuration finished a seed")
    order = sorted(judged, key=lambda i: summaries[i].mean, reverse=(mode == "max"))
    winner = order[0]
    if len(order) < 2:
        return Verdict(winner, None, None, None, None, f"{labels[winner]} has no runner-up to be compared with")
    runner_up = order[1]
    a, b = summaries[winner], summaries[runner_up]
    if a.sd is None or b.sd is None:
        few = labels[winner] if a.sd is None else labels[runner_up]
        return Verdict(winner, runner_up, None, None, None, f"undecided: {few} finished fewer than 2 seeds")
    lead, spread = abs(a.mean - b.mean), pooled_sd(a, b)
    clear = lead > spread
    text = (f"{labels[winner]} leads {labels[runner_up]} by {lead:.4g}, "
            + (f"more than the seed-to-seed spread (pooled sd {spread:.4g}): the lead holds"
               if clear else f"within the seed-to-seed spread (pooled sd {spread:.4g}): not confirmed at "
                             f"{min(a.n, b.n)} seeds"))
    if winner != 0:
        text += f"; the phase's own winner, {labels[0]}, is not the best on new seeds"
    return Verdict(winner, runner_up, lead, spread, clear, text)


# ------------------------------------------------------------------------------ confirm.json, confirm.md

@dataclass
class ConfirmedConfig:
    """One of the top configurations: where it ranked in the phase, what it set, what the phase
    measured (at the phase's seed) and what the new seeds gave (seed -> value; None: errored)."""

    rank: int
    trial_id: str
    decided: dict[str, Any]
    phase_score: float | None
    seeds: dict[int, float | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"#{self.rank} (trial {self.trial_id})"

    def summary(self) -> SeedSummary:
        return summarize([v for v in self.seeds.values() if v is not None])


def confirm_document(phase: str, metric: str, mode: str, epochs: int, configs: list[ConfirmedConfig]) -> dict:
    """confirm.json's content: the rule, each configuration with its seeds and summary, the verdict."""
    summaries = [c.summary() for c in configs]
    judged = verdict(summaries, [c.label for c in configs], mode)
    seeds = sorted({s for c in configs for s in c.seeds})
    rows = [{**asdict(c), "seeds": {str(k): v for k, v in c.seeds.items()},
             "n": s.n, "mean": s.mean, "sd": s.sd, "ci95": [s.low, s.high] if s.low is not None else None}
            for c, s in zip(configs, summaries)]
    return {"phase": phase, "metric": metric, "mode": mode, "epochs": epochs, "seeds": seeds, "level": LEVEL,
            "rule": RULE, "configs": rows, "verdict": asdict(judged),
            "note": _width_note(len(seeds))}


def _width_note(seeds: int) -> str:
    if seeds < 2:
        return ""
    t = t_quantile(seeds - 1)
    return (f"With {seeds} seeds a 95% t interval is mean +- {t:.2f} sd / sqrt({seeds}) (t at {seeds - 1} "
            f"degrees of freedom){': wide, more seeds narrow it' if seeds <= 5 else ''}")


def write_confirm(folder: Path, document: dict) -> None:
    write_json(Path(folder) / CONFIRM_JSON, document)
    atomic_write_text(Path(folder) / CONFIRM_MD, confirm_markdown(document))


def confirm_markdown(document: dict) -> str:
    """The table (one row per configuration, in the phase's rank order), the rule and the verdict."""
    metric = document["metric"]
    lines = [f"# Confirming {document['phase']}'s top {len(document['configs'])}: {len(document['seeds'])} new seeds "
             f"each, {document['epochs']} epochs", "",
             f"| phase rank | trial | {metric} in the phase | seeds done | mean | sd | 95% CI | config |",
             "|---|---|---|---|---|---|---|---|"]
    for row in document["configs"]:
        lines.append(f"| {row['rank']} | {row['trial_id']} | {_num(row['phase_score'])} | {row['n']}/"
                     f"{len(row['seeds'])} | {_num(row['mean'])} | {_num(row['sd'])} | {_interval(row['ci95'])} | "
                     f"{_config(row['decided'])} |")
    lines += ["", f"Seeds: {', '.join(map(str, document['seeds']))}. {document['note']}".rstrip(), "",
              f"Rule: {document['rule']}.", "", f"**Verdict**: {document['verdict']['text']}.", ""]
    return "\n".join(lines)


def confirm_table(document: dict) -> str:
    """The table as plain text, for the terminal."""
    header = f"{'rank':>4}  {'trial':<14} {'in phase':>8} {'n':>3} {'mean':>8} {'sd':>7}  {'95% CI':<19} config"
    lines = [header]
    for row in document["configs"]:
        lines.append(f"{row['rank']:>4}  {row['trial_id']:<14} {_num(row['phase_score']):>8} {row['n']:>3} "
                     f"{_num(row['mean']):>8} {_num(row['sd']):>7}  {_interval(row['ci95']):<19} "
                     f"{_config(row['decided'])}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _interval(ci: list | None) -> str:
    return "" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def _config(decided: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(decided.items()))
