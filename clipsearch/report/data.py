"""What each figure of a report plots, extracted from a phase's trials. Pure: no plotly, no files.

One function here per figure returns the plotted data, and one in figures.py draws it (the
split of optuna.visualization), so the tests check numbers, not pictures.

Inputs are the rows of trials.csv as `clipsearch.results.read_trials_csv` returns them
(typed cells, the trial's flat config under "config") and per-trial histories (one dict per
reported epoch, sorted by "epoch"). A trial's *score* is the ranking's: the best value of the
metric over the epochs it reached (`best_METRIC` in trials.csv); its *reach* is the last epoch
it reached. "Best" follows the phase's `mode` (phase.json): the highest value for `max`, the
lowest for `min`, as in clipsearch.results.ranking. When a figure cannot be drawn, its function
raises `Unavailable` with the reason the page shows instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from ..results.ranking import best_first, best_of, better

Row = dict[str, Any]
History = list[dict[str, Any]]

MISSING = "n/a"  # the axis position of a conditional parameter a trial did not set
#: parameters whose axes come first: the protocol's two big choices
LEADING = ("loss.name", "optimizer.name")


class Unavailable(Exception):
    """A figure or table cannot be made from these trials; the message says why, for the page."""


# ------------------------------------------------------------------------------ parameters

@dataclass(frozen=True)
class ParamKind:
    """How a config key varied over the trials, and so how to plot it and which Optuna
    distribution describes it."""

    name: str
    kind: str                       # "categorical", "log" (log-float), "float" or "int"
    choices: tuple[Any, ...] = ()   # categorical: the values seen, in order of their text
    low: float | None = None
    high: float | None = None


def param_kinds(configs: Iterable[dict[str, Any]]) -> tuple[dict[str, ParamKind], dict[str, str]]:
    """The parameters that vary over `configs`, each with its kind, and those that do not, each
    with the reason it is left out.

    Strings and booleans are categorical; numbers are int when all are ints, log-float when all
    are positive and span more than one decade (max / min > 10), float otherwise.
    """
    seen: dict[str, list[Any]] = {}
    for config in configs:
        for key, value in config.items():
            if value is not None:
                seen.setdefault(key, []).append(value)
    kinds, constant = {}, {}
    for key in _ordered(seen):
        distinct = set(map(_hashable, seen[key]))
        if len(distinct) < 2:
            constant[key] = f"never varies (always {next(iter(distinct))!r})"
        else:
            kinds[key] = _kind(key, seen[key])
    return kinds, constant


def _ordered(keys: Iterable[str]) -> list[str]:
    keys = sorted(keys)
    return [k for k in LEADING if k in keys] + [k for k in keys if k not in LEADING]


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) else repr(value)


def _kind(key: str, values: list[Any]) -> ParamKind:
    if any(isinstance(v, (str, bool)) or not isinstance(v, (int, float)) for v in values):
        return ParamKind(key, "categorical", choices=tuple(sorted(set(map(_hashable, values)), key=str)))
    low, high = min(values), max(values)
    if all(isinstance(v, int) for v in values):
        return ParamKind(key, "int", low=low, high=high)
    kind = "log" if low > 0 and high / low > 10 else "float"
    return ParamKind(key, kind, low=float(low), high=float(high))


def declared_kind(name: str, distribution: dict[str, Any]) -> ParamKind | None:
    """A parameter's kind from the distribution an Optuna study recorded (Optuna's JSON form:
    {"name": "FloatDistribution", "attributes": {...}}); None for one it does not know."""
    kind, attrs = distribution.get("name", ""), distribution.get("attributes", {})
    if kind == "CategoricalDistribution":
        return ParamKind(name, "categorical", choices=tuple(map(_hashable, attrs["choices"])))
    if kind.startswith("Int"):
        return ParamKind(name, "int", low=attrs["low"], high=attrs["high"])
    if kind in ("FloatDistribution", "UniformDistribution", "LogUniformDistribution", "DiscreteUniformDistribution"):
        log = attrs.get("log", kind == "LogUniformDistribution")
        return ParamKind(name, "log" if log else "float", low=float(attrs["low"]), high=float(attrs["high"]))
    return None


def with_declared(kinds: dict[str, ParamKind], declared: dict[str, dict[str, Any]]) -> dict[str, ParamKind]:
    """The varying parameters' kinds as the search space declared them where it is known (a
    uniform range can span decades without being log), widened to every value the trials took."""
    out = {}
    for name, seen in kinds.items():
        known = declared_kind(name, declared[name]) if name in declared else None
        if known is None or (known.kind == "categorical") != (seen.kind == "categorical"):
            out[name] = seen
        elif known.kind == "categorical":
            out[name] = ParamKind(name, "categorical", choices=known.choices + tuple(
                c for c in seen.choices if c not in known.choices))
        else:
            out[name] = ParamKind(name, known.kind, low=min(known.low, seen.low), high=max(known.high, seen.high))
    return out


# ------------------------------------------------------------------------------ trials and scores

@dataclass(frozen=True)
class TrialPoint:
    trial_id: str
    score: float          # best metric over the epochs it reached
    reach: int            # the last epoch it reached
    stopped_early: bool


def scored_trials(rows: list[Row], metric: str) -> list[TrialPoint]:
    """The trials with a score, in the rows' order. Errored trials are left out, as the ranking
    leaves them out."""
    points = []
    for row in rows:
        score = row.get(f"best_{metric}")
        if row.get("status") != "ERROR" and _finite(score):
            points.append(TrialPoint(str(row["trial_id"]), float(score), int(row.get("epochs") or 0),
                                     bool(row.get("stopped_early"))))
    return points


def ahead(point: TrialPoint, best: TrialPoint | None, mode: str = "max") -> bool:
    """Whether `point` ranks above `best` by the ranking rule: the later reach first, then the
    better score in `mode`'s direction; a tie keeps `best`."""
    if best is None:
        return True
    if point.reach != best.reach:
        return point.reach > best.reach
    return better(point.score, best.score, mode)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_span(history: History) -> tuple[float, float] | None:
    """When a trial started and when it last reported, in Unix seconds: its first report's
    timestamp less the time it had trained by then, and its last report's timestamp. None
    when its reports carry no timestamp."""
    stamped = [e for e in history if _finite(e.get("timestamp"))]
    if not stamped:
        return None
    first = stamped[0]
    started = float(first["timestamp"]) - float(first.get("time_total_s") or 0.0)
    return started, max(started, float(stamped[-1]["timestamp"]))


# ------------------------------------------------------------------------------ objective by a choice

@dataclass(frozen=True)
class Group:
    """The trials that made one choice (an optimizer, a loss)."""

    name: str
    points: tuple[TrialPoint, ...]
    offsets: tuple[float, ...]     # each point's horizontal offset from the group's centre
    median: float


def objective_by(rows: list[Row], key: str, metric: str, spread: float = 0.3, mode: str = "max") -> list[Group]:
    """The scores grouped by the value of config `key`, the best median first.

    Points are spread evenly across `spread` (a deterministic jitter) so that equal scores stay
    visible and the figure is the same at every run.
    """
    points = {p.trial_id: p for p in scored_trials(rows, metric)}
    members: dict[str, list[TrialPoint]] = {}
    for row in rows:
        value = row["config"].get(key)
        if value is not None and str(row["trial_id"]) in points:
            members.setdefault(str(value), []).append(points[str(row["trial_id"])])
    if not members:
        raise Unavailable(f"no scored trial sets {key}")
    groups = [Group(name, tuple(pts), _spread(len(pts), spread), float(np.median([p.score for p in pts])))
              for name, pts in members.items()]
    return sorted(groups, key=lambda g: (best_first(mode) * g.median, g.name))


def _spread(n: int, width: float) -> tuple[float, ...]:
    if n == 1:
        return (0.0,)
    return tuple(float(x) for x in np.linspace(-width / 2, width / 2, n))


# ------------------------------------------------------------------------------ progression

@dataclass(frozen=True)
class Progression:
    points: tuple[TrialPoint, ...]     # in the order the trials started
    best: tuple[TrialPoint, ...]       # the best trial so far after each one


def progression(rows: list[Row], metric: str, order: list[str], mode: str = "max") -> Progression:
    """Each trial's score in start order, and the best so far. "Best" follows the ranking rule
    (reach first, then score), so the line can fall when a trial that trained longer overtakes
    one that ASHA stopped early on a higher low-epoch value."""
    points = {p.trial_id: p for p in scored_trials(rows, metric)}
    ordered = [points[t] for t in order if t in points]
    ordered += [p for t, p in points.items() if t not in order]  # no start time: at the end
    if not ordered:
        raise Unavailable("no trial has a score")
    return Progression(tuple(ordered), tuple(best_so_far(ordered, mode)))


def best_so_far(points: list[TrialPoint], mode: str = "max") -> list[TrialPoint]:
    best, out = None, []
    for point in points:
        if ahead(point, best, mode):
            best = point
        out.append(best)
    return out


# ------------------------------------------------------------------------------ a common epoch

@dataclass(frozen=True)
class CommonEpoch:
    """The epoch at which trials are compared for importance, and their values there."""

    epoch: int
    values: dict[str, float]   # trial_id -> best metric over epochs 1..epoch
    needed: int                # trials an epoch needed to qualify
    candidates: int            # trials with a value at some epoch


def value_at(history: History, metric: str, epoch: int, mode: str = "max") -> float | None:
    """The best metric over epochs 1..`epoch` in `mode`'s direction (the ranking's score had the
    trial stopped there), or None when the history has no record of that epoch."""
    if not any(row.get("epoch") == epoch for row in history):
        return None
    values = [row[metric] for row in history if row.get("epoch", math.inf) <= epoch and _finite(row.get(metric))]
    return best_of(values, mode) if values else None


def common_epoch(histories: dict[str, History], metric: str, min_trials: int = 4,
                 min_share: float = 0.5, mode: str = "max") -> CommonEpoch:
    """The largest epoch at which at least max(min_trials, min_share of the trials) have a value.

    Comparing every trial at one epoch keeps ASHA's early stops from biasing importance: a
    stopped trial's score comes from fewer epochs than a finished one's.
    """
    by_epoch: dict[int, dict[str, float]] = {}
    for trial_id, history in histories.items():
        for epoch in {int(row["epoch"]) for row in history if "epoch" in row}:
            value = value_at(history, metric, epoch, mode)
            if value is not None:
                by_epoch.setdefault(epoch, {})[trial_id] = value
    candidates = len({t for values in by_epoch.values() for t in values})
    needed = max(min_trials, math.ceil(min_share * candidates))
    eligible = [e for e, values in by_epoch.items() if len(values) >= needed]
    if not eligible:
        most = max((len(v) for v in by_epoch.values()), default=0)
        raise Unavailable(f"no epoch has a value of {metric} for {needed} trials (at most {most} of "
                          f"{candidates} at one epoch); importance needs at least {min_trials}")
    epoch = max(eligible)
    return CommonEpoch(epoch, by_epoch[epoch], needed, candidates)


def history_from_row(row: Row, metric: str) -> History:
    """What trials.csv alone tells of a trial's history: its best epoch and its last. Exact
    where defined: the best over epochs 1..best_epoch, and over 1..reach, are both its score."""
    rows = []
    if _finite(row.get(f"best_{metric}")) and row.get("best_epoch"):
        rows.append({"epoch": int(row["best_epoch"]), metric: row[f"best_{metric}"]})
    if _finite(row.get(metric)) and row.get("epochs"):
        rows.append({"epoch": int(row["epochs"]), metric: row[metric]})
    return sorted({r["epoch"]: r for r in rows}.values(), key=lambda r: r["epoch"])


# ------------------------------------------------------------------------------ parallel coordinates

@dataclass(frozen=True)
class Axis:
    label: str
    values: tuple[float, ...]
    tickvals: tuple[float, ...] | None = None   # None: the plotting library's own ticks
    ticktext: tuple[str, ...] | None = None
    range: tuple[float, float] | None = None    # None: the values' own range


@dataclass(frozen=True)
class ParallelCoordinates:
    axes: tuple[Axis, ...]
    color: tuple[float, ...]   # each trial's score
    color_label: str
    trial_ids: tuple[str, ...]
    chance: float | None = None   # the metric's chance level: the score axis and the colours reach it
    mode: str = "max"             # the metric's direction: the best score takes the brightest colour


def parallel_coordinates(rows: list[Row], kinds: dict[str, ParamKind], metric: str,
                         chance: float | None = None, mode: str = "max") -> ParallelCoordinates:
    """One line per scored trial across an axis per varying parameter and a last axis for the
    score. Categories become integer positions with their names as tick labels; log-float
    parameters are plotted as log10 values with tick labels at the powers of ten. With the
    metric's chance level, the score axis and the colour scale reach down to it (a trial at
    chance would take the darkest colour)."""
    points = {p.trial_id: p for p in scored_trials(rows, metric)}
    trials = [r for r in rows if str(r["trial_id"]) in points]
    if len(trials) < 2:
        raise Unavailable(f"{len(trials)} trial(s) with a score; the plot needs 2")
    if not kinds:
        raise Unavailable("no hyperparameter varies across the trials")
    axes = [param_axis(kind, [r["config"].get(kind.name) for r in trials]) for kind in kinds.values()]
    scores = tuple(points[str(r["trial_id"])].score for r in trials)
    reach = None if chance is None else (min(chance, *scores), max(chance, *scores))
    axes.append(Axis(f"best {metric}", scores, range=reach))
    return ParallelCoordinates(tuple(axes), scores, f"best {metric}", tuple(str(r["trial_id"]) for r in trials),
                               chance, mode)


def param_axis(kind: ParamKind, values: list[Any]) -> Axis:
    if kind.kind == "categorical":
        return categorical_axis(kind.name, values, kind.choices)
    if kind.kind == "log":
        return log_axis(kind.name, values)
    return linear_axis(kind.name, values)


def categorical_axis(label: str, values: list[Any], choices: tuple[Any, ...]) -> Axis:
    """Each choice at an integer position; the range covers every choice, so that one no
    trial scored with (all its trials errored, or the space declared it unused) still shows."""
    names = [str(c) for c in choices] + ([MISSING] if any(v is None for v in values) else [])
    codes = tuple(float(names.index(MISSING if v is None else str(v))) for v in values)
    return Axis(label, codes, tuple(float(i) for i in range(len(names))), tuple(names), (0.0, len(names) - 1.0))


def log_axis(label: str, values: list[float | None]) -> Axis:
    """log10 of the values, with ticks labelled 1e-4 etc. at the powers of ten around them (and
    at 2 and 5 times them when the values span less than two decades, so that a narrow range
    still has labels); the axis runs from the tick below the values to the tick above."""
    logs = [None if v is None else math.log10(v) for v in values]
    known = [x for x in logs if x is not None]
    low, high = min(known), max(known)
    steps = (1, 2, 5) if high - low < 2 else (1,)
    ticks = [(p + math.log10(m), f"{m}e{p}") for p in range(math.floor(low), math.ceil(high) + 1) for m in steps]
    first = max(i for i, (t, _) in enumerate(ticks) if t <= low + 1e-9)
    last = min(i for i, (t, _) in enumerate(ticks) if t >= high - 1e-9)
    tickvals, ticktext = zip(*ticks[first:last + 1])
    axis = _with_missing(label, logs, tuple(tickvals), tuple(ticktext))
    return Axis(axis.label, axis.values, axis.tickvals, axis.ticktext, (min(axis.tickvals), max(axis.tickvals)))


def linear_axis(label: str, values: list[float | None], ticks: int = 5) -> Axis:
    known = [v for v in values if v is not None]
    if not any(v is None for v in values):
        return Axis(label, tuple(float(v) for v in values))
    # explicit ticks only because the missing position needs a label of its own
    positions = tuple(float(x) for x in np.linspace(min(known), max(known), ticks))
    return _with_missing(label, [None if v is None else float(v) for v in values], positions,
                         tuple(f"{x:.3g}" for x in positions))


def _with_missing(label: str, values: list[float | None], tickvals: tuple[float, ...],
                  ticktext: tuple[str, ...]) -> Axis:
    """Trials that did not set a conditional parameter sit at an "n/a" position below the axis's
    range: a NaN would break the line of the trial."""
    if not any(v is None for v in values):
        return Axis(label, tuple(values), tickvals, ticktext)
    low, high = min(tickvals), max(tickvals)
    missing = low - 0.15 * ((high - low) or 1.0)
    return Axis(label, tuple(missing if v is None else v for v in values),
                (missing, *tickvals), (MISSING, *ticktext))


# ------------------------------------------------------------------------------ learning curves

@dataclass(frozen=True)
class Curve:
    trial_id: str
    epochs: tuple[int, ...]
    values: tuple[float, ...]
    end: str | None       # "stopped early", "errored", or None for a trial that ran its course


def learning_curves(histories: dict[str, History], rows: list[Row], metric: str) -> list[Curve]:
    """The metric per epoch of each trial; how it ended marks its last point."""
    ends = {str(r["trial_id"]): _end(r) for r in rows}
    curves = []
    for trial_id, history in histories.items():
        pairs = [(int(r["epoch"]), float(r[metric])) for r in history if _finite(r.get(metric))]
        if pairs:
            epochs, values = zip(*pairs)
            curves.append(Curve(trial_id, epochs, values, ends.get(trial_id)))
    if not curves:
        raise Unavailable(f"no per-epoch record of {metric} was found")
    return curves


def _end(row: Row) -> str | None:
    if row.get("status") == "ERROR":
        return "errored"
    return "stopped early" if row.get("stopped_early") else None


# ------------------------------------------------------------------------------ top configurations

@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def top_configurations(rows: list[Row], kinds: dict[str, ParamKind], metric: str, k: int = 10) -> Table:
    """The k best ranked trials, best first, with the parameters that varied."""
    ranked = sorted((r for r in rows if r.get("rank") is not None), key=lambda r: r["rank"])[:k]
    if not ranked:
        raise Unavailable("no trial was ranked (every trial errored)")
    lead = ("rank", "trial_id", "epochs", "best_epoch", f"best_{metric}", "stopped_early")
    table = tuple(tuple(r.get(c) for c in lead) + tuple(r["config"].get(p) for p in kinds) for r in ranked)
    return Table(lead + tuple(kinds), table)


# ------------------------------------------------------------------------------ (lr, weight decay) sweep

LR, WD = "optimizer.lr", "optimizer.weight_decay"


@dataclass(frozen=True)
class Grid:
    lrs: tuple[float, ...]            # rows, ascending
    wds: tuple[float, ...]            # columns, ascending
    z: tuple[tuple[float | None, ...], ...]   # mean score of each (lr, wd) cell; None: not run
    counts: tuple[tuple[int, ...], ...]


def is_lr_wd_sweep(kinds: dict[str, ParamKind]) -> bool:
    """Only lr and weight decay varied, both as numbers: a sweep such as seed 000's."""
    return set(kinds) == {LR, WD} and all(k.kind != "categorical" for k in kinds.values())


def lr_wd_grid(rows: list[Row], metric: str, max_values: int = 12) -> Grid:
    """The mean score of every (lr, weight decay) pair that was run (repeats are averaged)."""
    cells: dict[tuple[float, float], list[float]] = {}
    points = {p.trial_id: p for p in scored_trials(rows, metric)}
    for row in rows:
        lr, wd = row["config"].get(LR), row["config"].get(WD)
        if str(row["trial_id"]) in points and lr is not None and wd is not None:
            cells.setdefault((float(lr), float(wd)), []).append(points[str(row["trial_id"])].score)
    lrs, wds = sorted({lr for lr, _ in cells}), sorted({wd for _, wd in cells})
    if not cells or max(len(lrs), len(wds)) > max_values:
        raise Unavailable(f"{len(lrs)} lr x {len(wds)} weight decay values: not a grid of at most {max_values}")
    z = tuple(tuple(_mean(cells.get((lr, wd))) for wd in wds) for lr in lrs)
    counts = tuple(tuple(len(cells.get((lr, wd), ())) for wd in wds) for lr in lrs)
    return Grid(tuple(lrs), tuple(wds), z, counts)


def _mean(values: list[float] | None) -> float | None:
    return float(np.mean(values)) if values else None


# ------------------------------------------------------------------------------ embeddings and classes

@dataclass(frozen=True)
class Embedding2D:
    xy: np.ndarray                 # (n, 2)
    labels: tuple[str, ...]        # (n,)


def tsne_points(embeddings: np.ndarray, labels: np.ndarray, class_names: list[str] | None = None,
                max_points: int = 1000, seed: int = 0) -> Embedding2D:
    """2-D t-SNE (scikit-learn) of (n, d) embeddings; at most `max_points`, drawn at random
    with `seed`: enough to see the classes, and t-SNE's cost grows faster than n."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x, y = np.asarray(embeddings, dtype=np.float64), np.asarray(labels)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"embeddings must be (n, d) and labels (n,); got {x.shape} and {y.shape}")
    if len(x) < 5:
        raise Unavailable(f"{len(x)} embeddings; t-SNE needs at least 5")
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
        x, y = x[keep], y[keep]
    # perplexity must stay below n; 30 is scikit-learn's default for large n. One OpenMP thread:
    # on cores busy with trials, t-SNE's spinning threads ran 20 times slower than one thread.
    with threadpool_limits(1):
        xy = TSNE(2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca", random_state=seed).fit_transform(x)
    names = [str(class_names[int(v)]) if class_names is not None else str(v) for v in y]
    return Embedding2D(xy, tuple(names))


@dataclass(frozen=True)
class Confusion:
    class_names: tuple[str, ...]
    counts: np.ndarray        # (C, C): row = true class, column = predicted
    percent: np.ndarray       # (C, C): each row as % of that class's examples
    accuracy: float           # % on the diagonal


def confusion_data(matrix: np.ndarray, class_names: list[str]) -> Confusion:
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(f"the confusion matrix must be (C, C) with C = {len(class_names)} class names; "
                         f"got {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    percent = np.divide(100.0 * counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    accuracy = 100.0 * np.trace(counts) / counts.sum() if counts.sum() else 0.0
    return Confusion(tuple(map(str, class_names)), counts, percent, float(accuracy))


# ------------------------------------------------------------------------------ optimizer vs loss

OPTIMIZER, LOSS = "optimizer.name", "loss.name"


def optimizer_loss_share(importances: dict[str, float]) -> dict[str, float]:
    """The importances of the optimizer and of the loss, rescaled to sum to 1 (seed 001's
    "the optimizer explained 89%, the loss 11%")."""
    missing = [k for k in (OPTIMIZER, LOSS) if k not in importances]
    if missing:
        raise Unavailable(f"{' and '.join(missing)} not among the evaluated parameters")
    total = importances[OPTIMIZER] + importances[LOSS]
    if total <= 0:
        raise Unavailable("neither the optimizer nor the loss has any importance")
    return {OPTIMIZER: importances[OPTIMIZER] / total, LOSS: importances[LOSS] / total}
