"""Search spaces: the YAML files in search_spaces/, read and checked before Ray starts.

A file names the config the trials start from, the metric and its direction, the budget and
the parameters:

    base: quick               # preset (quick | default) or a config YAML path
    metric: objective         # any metric train() reports, or train_loss
    mode: max                 # max (the default) or min (a loss)
    num_samples: 24           # trials (phase 2: repeats of the grid)
    max_concurrent: 2
    budget: {minutes: 30, epochs: 40}               # optional: wall time and full-data epochs
    scheduler: {kind: asha, grace_period: 1}        # Tune's trial scheduler (clipsearch.tune.schedulers)
    sampler: {kind: tpe, n_startup_trials: 3}       # the Optuna phases (1, 3, classify) only
    points:                                         # the Optuna phases: configurations run first
      - {optimizer.name: adamw, optimizer.lr: 2.0e-3}
    top_optimizers: 3                               # phase 2 only
    params:
      loss.name: {choice: [sogclr, isogclr]}
      optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}
      optimizer.momentum: {uniform: [0.8, 0.99], when: {optimizer.name: [momentum, rmsprop]}}
      optimizer.weight_decay: {loguniform: [0.3, 3.0], relative: true}   # phase 3: x phase 2's value
      train.epochs: 4         # a constant

Distributions: uniform [low, high], loguniform [low, high] (low > 0), int [low, high]
(inclusive), choice [...], grid [...]. `when: {param: [values]}` makes a parameter exist only
in trials where `param` takes one of `values`. `relative: true` (phase 3) reads the bounds as
factors of the value phase 2's best trial ran with. Keys are dotted config keys.

`points:` (the Optuna phases) lists known-good configurations, flat dotted keys of searched
params, each value one its param can draw; the study runs them first, in order (phase 3: after
phase 2's best). A point may leave params out (they are drawn); a conditional param needs its
`when:` target in the point (or a constant). A relative param's value (phase 3) is checked once
phase 2's best fixes its range: outside it, it is drawn instead, with a warning.

`budget:` (optional): `minutes` (or `time_budget_s`) of wall time for the phase's run (Ray's
TuneConfig.time_budget_s), and `epochs`: full-data epochs over all the phase's trials (a trial's
epochs x its data.fraction); once spent, the phase stops its trials and ends as usual.

`sampler:` (phases 1, 3 and classify; optional) picks Optuna's sampler, seeded with the phase's
seed: `kind: tpe` (the default; options n_startup_trials, multivariate (true), group (follows
multivariate), constant_liar (true), n_ei_candidates), `kind: gp` (n_startup_trials) or
`kind: random` (no options). `kind: grid` is refused: Optuna's GridSampler needs every
parameter as a finite list before the first trial, and these spaces are define-by-run (ranges,
`when:`); a grid is phase 2's. n_startup_trials, the random trials before the model, defaults
to max(2, min(10, num_samples // 4)) of the phase's final num_samples (--num-samples resizes it
unless the file sets it); a phase whose trials would be half or more random start-up draws
prints a warning when it is prepared (startup_warning).

Every problem raises `InputError` naming the file, the key and the fix. Beyond the format, the
parameters are checked against the config and the registries by building the config of
every combination of component names (loss, optimizer, scheduler) and `when` targets, with the
numeric parameters at their low and at their high bounds: a key that does not exist, a value
out of a component's range, or a loss parameter given to a loss that does not take it (which
must then be made conditional on the losses that do) is reported before anything runs.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, apply_settings, build_config, flatten, read_base, read_yaml
from ..errors import InputError
from .schedulers import asha_settings, parse_scheduler

NUMERIC = ("uniform", "loguniform", "int")
LISTS = ("choice", "grid")
DISTRIBUTIONS = NUMERIC + LISTS
COMPONENTS = ("loss", "optimizer", "scheduler")
#: config keys holding paths: made absolute on the driver, because a trial runs in its own
#: working directory
PATH_KEYS = ("data.source", "data.image_root", "data.val_source", "data.val_image_root",
             "data.zeroshot_source", "data.cache_dir", "model.image_weights", "model.text_weights",
             "retrieval.query", "retrieval.gallery", "retrieval.labels")
_MAX_COMBINATIONS = 5000
#: the space files that ship inside the package (in a checkout, a link to search_spaces/)
SHIPPED_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"


@dataclass(frozen=True)
class PhaseKind:
    """What a phase's space file may hold."""

    name: str
    search: str                        # "optuna" (phases 1, 3) or "grid" (phase 2)
    extra_keys: tuple[str, ...] = ()   # top-level keys beyond the common ones
    provided: tuple[str, ...] = ()     # keys the phase sets from the previous phase's results
    relative: bool = False             # whether `relative: true` bounds are allowed
    scheduler: str = "none"            # the scheduler kind without a `scheduler:` block


PHASES = {
    "phase1": PhaseKind("phase1", "optuna", extra_keys=("asha", "sampler", "points"), scheduler="asha"),
    "phase2": PhaseKind("phase2", "grid", extra_keys=("top_optimizers",), provided=("optimizer.name",)),
    "phase3": PhaseKind("phase3", "optuna", extra_keys=("sampler", "points"), provided=("loss.name", "optimizer.name"),
                        relative=True),
    # the classification protocol (seed 002): one Optuna + ASHA search per method, each method's
    # space = the file's common params + its own (see clipsearch.tune.classify)
    "classify": PhaseKind("classify", "optuna", extra_keys=("asha", "methods", "sampler", "points"), scheduler="asha"),
    # SupCon fine-tuning for retrieval (seed 000): a grid of short runs, zero-shot baselines
    # first, the best cell trained long_epochs after (see clipsearch.tune.supcon)
    "supcon_sweep": PhaseKind("supcon_sweep", "grid", extra_keys=("baselines", "long_epochs")),
    # every cell of the file's grid axes, nothing before it (`clipsearch bench search`)
    "grid": PhaseKind("grid", "grid"),
}
_COMMON_KEYS = ("base", "metric", "mode", "num_samples", "max_concurrent", "budget", "scheduler", "params")
#: what train() reports about training itself that a space may optimise (beside the evaluators'
#: metrics): the epoch's mean training loss, with `mode: min`
TRAINING_METRICS = ("train_loss",)
MODES = ("max", "min")


@dataclass(frozen=True)
class SearchedParam:
    """One searched parameter: a distribution over a config key, maybe conditional."""

    key: str
    kind: str                                  # one of DISTRIBUTIONS
    values: tuple                              # (low, high) or the choices
    when: dict[str, tuple] = field(default_factory=dict)
    relative: bool = False

    def active(self, known: dict[str, Any]) -> bool:
        """Whether the parameter exists in a trial whose other values are `known`."""
        return all(known.get(k) in allowed for k, allowed in self.when.items())

    def suggest(self, trial) -> Any:
        """Draw the value from an Optuna trial (define-by-run)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.key, *self.values)
        return trial.suggest_float(self.key, *self.values, log=self.kind == "loguniform")

    def corner(self, i: int) -> Any:
        """The i-th value the config check tries: low / high bounds, every choice in turn."""
        if self.kind in LISTS:
            return self.values[i % len(self.values)]
        return self.values[i % 2]

    def holds(self, value: Any) -> bool:
        """Whether a draw of this parameter can be `value` (a point enqueued for Optuna must be)."""
        if self.kind in LISTS:
            return any(_same(value, v) for v in self.values)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.values[0] <= value <= self.values[1]

    def as_drawn(self, value: Any) -> Any:
        """A value it holds, of the type its draw gives (a listed value itself, an int, a float)."""
        if self.kind in LISTS:
            return next(v for v in self.values if _same(value, v))
        return int(value) if self.kind == "int" else float(value)

    def to_json(self) -> dict[str, Any]:
        """What phase.json keeps of it (an extension of the phase draws from the same params)."""
        return {"key": self.key, "kind": self.kind, "values": list(self.values),
                "when": {k: list(v) for k, v in self.when.items()}, "relative": self.relative}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchedParam:
        return cls(data["key"], data["kind"], tuple(data["values"]),
                   {k: tuple(v) for k, v in data.get("when", {}).items()}, bool(data.get("relative")))

    def scaled(self, centre: float, clip: tuple[float | None, float | None]) -> SearchedParam:
        """The absolute parameter of a `relative: true` one: bounds times `centre`, kept in `clip`."""
        low, high = (v * centre for v in self.values)
        if clip[0] is not None:
            low, high = max(low, clip[0]), max(high, clip[0])
        if clip[1] is not None:
            low, high = min(low, clip[1]), min(high, clip[1])
        return SearchedParam(self.key, self.kind, (low, high), self.when)


def _same(a: Any, b: Any) -> bool:
    """Equal, and not merely as a bool equals 1 or 0."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


@dataclass(frozen=True, eq=False)
class Base:
    """What a phase's trials start from: a preset or config file as a raw mapping (paths made
    absolute), with the preset's component defaults (what a loss or optimizer gets when a trial
    switches to it). Travels to the trials and into phase.json."""

    raw: dict[str, Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    name: str = "quick"                # "quick", "default" or an absolute config path

    def config(self, values: dict[str, Any], source: str) -> Config:
        """The config of a trial whose flat dotted `values` are set over the base."""
        return build_config(apply_settings(self.raw, values, self.defaults), source)

    def to_json(self) -> dict[str, Any]:
        return {"raw": self.raw, "defaults": self.defaults, "name": self.name}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Base:
        return cls(data["raw"], data["defaults"], data["name"])


@dataclass
class SearchSpace:
    """A validated space file."""

    path: str
    phase: str
    base: Base
    metric: str
    num_samples: int
    max_concurrent: int
    constants: dict[str, Any]
    params: list[SearchedParam]                # in an order where every `when` target comes first
    asha: dict[str, int] = field(default_factory=dict)    # the scheduler's settings when it is ASHA
    sampler: dict[str, Any] = field(default_factory=dict)  # Optuna phases: the file's block, kind filled in
    mode: str = "max"                                      # the metric's direction: max or min
    points: list[dict[str, Any]] = field(default_factory=list)  # Optuna phases: run first, in order
    scheduler: dict[str, Any] = field(default_factory=dict)     # kind + options (schedulers.parse_scheduler)
    budget: dict[str, float] = field(default_factory=dict)      # time_budget_s and/or epochs (full-data)
    top_optimizers: int = 3
    baselines: list[str] = field(default_factory=list)   # supcon_sweep: towers ranked zero-shot
    long_epochs: int = 1                                   # supcon_sweep: epochs of the best cell

    @property
    def keys(self) -> set[str]:
        return set(self.constants) | {p.key for p in self.params}

    def grid_axes(self) -> dict[str, list]:
        return {p.key: list(p.values) for p in self.params if p.kind == "grid"}

    def epochs(self) -> int:
        """train.epochs of the trials (a constant, or the base's)."""
        return self.base.config(self.constants, self.path).train.epochs


class OptunaSpace:
    """Optuna's define-by-run space (phases 1 and 3): conditional parameters are drawn only in
    trials where their condition holds, so TPE never sees a dead knob.

    A plain class rather than a closure: Ray pickles the searcher, this object with it, to
    restore an interrupted phase.
    """

    def __init__(self, params: list[SearchedParam], constants: dict[str, Any]):
        self.params, self.constants = params, constants

    def __call__(self, trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self.params:
            if param.active({**self.constants, **values}):
                values[param.key] = param.suggest(trial)
        # Ray merges these over the suggested values into the trial's config: a drawn value
        # must win over the value it was centred on
        return {k: v for k, v in self.constants.items() if k not in values}


# ------------------------------------------------------------------------------ the sampler

@dataclass(frozen=True)
class SamplerKind:
    """A `sampler: {kind: ...}` of an Optuna phase: the Optuna class, the options a file may set
    (name -> type) and the defaults clipsearch gives them. A kind with n_startup_trials models
    the results (after that many random trials); the others draw at random."""

    name: str
    cls: str                                           # in optuna.samplers
    options: dict[str, type] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def model_based(self) -> bool:
        return "n_startup_trials" in self.options


SAMPLERS = {
    # multivariate: one density over the parameters together, so that TPE can learn that a good
    # learning rate depends on the optimizer (Optuna 5's default too, written out so that
    # phase.json says what ran); group (follows multivariate unless set): the spaces are
    # define-by-run with `when:` parameters, and without it multivariate TPE models only the
    # parameters every trial has and draws the conditional ones independently; constant_liar:
    # with max_concurrent > 1, running trials count as bad results, so that trials started
    # together are not drawn from the same posterior to nearly the same point
    "tpe": SamplerKind("tpe", "TPESampler", {"n_startup_trials": int, "multivariate": bool, "group": bool,
                                             "constant_liar": bool, "n_ei_candidates": int},
                       {"multivariate": True, "constant_liar": True}),
    # a Gaussian process: it models COMPLETE trials only (not the trials ASHA stops, told PRUNED)
    # and draws `when:` parameters at random: for searches like phase 3 (no ASHA, conditions fixed)
    "gp": SamplerKind("gp", "GPSampler", {"n_startup_trials": int}),
    "random": SamplerKind("random", "RandomSampler"),
}
_SAMPLER_EXAMPLE = "`sampler: {kind: tpe, n_startup_trials: 3}`"


def default_startup_trials(num_samples: int) -> int:
    """The random trials a model-based sampler starts with when the file does not say.

    TPE splits the results into a better and a worse group, so it needs at least one of each (2)
    before its densities mean anything; beyond that a model-based draw is worth more than a
    random one, so a quarter of the budget explores at random, never more than Optuna's own 10
    (a larger budget gains nothing from more random trials). 12 trials: 3 random, 9 modelled
    (Optuna's 10 would leave 2); 4 trials: 2 and 2.
    """
    return max(2, min(10, num_samples // 4))


def sampler_settings(block: dict[str, Any], num_samples: int) -> dict[str, Any]:
    """The sampler a phase runs, clipsearch's defaults filled in (what phase.json keeps): the file's
    `sampler:` block over the kind's defaults, n_startup_trials sized to `num_samples` (the
    final one, after --num-samples) unless the block sets it."""
    info = SAMPLERS[block.get("kind", "tpe")]
    settings = {**info.defaults, **block, "kind": info.name}
    if "group" in info.options:
        settings.setdefault("group", settings["multivariate"])  # group needs the multivariate TPE
    if info.model_based:
        settings.setdefault("n_startup_trials", default_startup_trials(num_samples))
    return settings


def optuna_sampler(settings: dict[str, Any], seed: int):
    """The Optuna sampler of sampler_settings' `settings`, seeded with the phase's seed."""
    import warnings

    import optuna

    options = {k: v for k, v in settings.items() if k != "kind"}
    with warnings.catch_warnings():
        # TPE's `group` is marked experimental: the warning, once per phase, would say only that
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return getattr(optuna.samplers, SAMPLERS[settings["kind"]].cls)(seed=seed, **options)


def random_start_trials(settings: dict[str, Any], num_samples: int, max_concurrent: int, enqueued: int = 0) -> int:
    """How many of a phase's trials a model-based sampler draws at random: those started before
    n_startup_trials results are in (the first max_concurrent start together, then one as each
    ends), less the enqueued points, which come first."""
    startup = settings.get("n_startup_trials", 0)
    before_model = min(num_samples, startup + max_concurrent - 1) if startup else 0
    return max(0, before_model - enqueued)


def startup_warning(settings: dict[str, Any], num_samples: int, max_concurrent: int, enqueued: int = 0,
                    phase: str = "this phase") -> str | None:
    """One line when half or more of a model-based phase's trials would be random start-up
    draws (it would be Bayesian in name only), else None."""
    if not SAMPLERS[settings["kind"]].model_based:
        return None
    random = random_start_trials(settings, num_samples, max_concurrent, enqueued)
    if 2 * random < num_samples:
        return None
    return (f"warning: {phase}: {random} of its {num_samples} trials are random start-up draws "
            f"({settings['kind']} models the results after n_startup_trials={settings['n_startup_trials']}, "
            f"{max_concurrent} trial(s) at a time), so at least half of this Bayesian search is random; "
            f"raise num_samples, or lower sampler.n_startup_trials or max_concurrent in the space file")


def incumbent_point(space: SearchSpace, carried: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Phase 3's first trial: phase 2's best as `space` (relative ranges resolved) draws it.

    Every parameter that trial draws (a conditional one where the incumbent's values meet its
    condition) gets the value phase 2's best ran with: carried, else the base's, else the
    registry default (resolved_flat: the values the relative ranges are centred on). A value
    the distribution does not hold (a choice that does not list it) cannot be enqueued: it is
    returned as left out (key -> value), and the trial draws it.
    """
    start = resolved_flat(space.base.config({**carried, **space.constants}, space.path))
    point: dict[str, Any] = {}
    left_out: dict[str, Any] = {}
    for param in space.params:  # ordered: a `when` target comes before the parameters reading it
        if not param.active({**start, **point}):
            continue
        value = start.get(param.key)
        if param.holds(value):
            point[param.key] = param.as_drawn(value)
        else:
            left_out[param.key] = value
    return point, left_out


# ------------------------------------------------------------------------------ trial configs

def resolved_flat(cfg: Config) -> dict[str, Any]:
    """cfg.flat() with every component parameter the registries default filled in: the values
    a run actually used (what phase 3 centres its relative ranges on)."""
    from ..losses import resolve_loss_params
    from ..optim import resolve_optimizer_params, resolve_scheduler_params

    flat = cfg.flat()
    for section, resolve in (("loss", resolve_loss_params), ("optimizer", resolve_optimizer_params),
                             ("scheduler", resolve_scheduler_params)):
        part = getattr(cfg, section)
        for key, value in resolve(part.name, part.params).items():
            flat.setdefault(f"{section}.{key}", value)
    return flat


def absolute_paths(values: dict[str, Any], root: Path) -> dict[str, Any]:
    """Path-valued keys made absolute against `root` (the directory the command runs in)."""
    out = dict(values)
    for key in PATH_KEYS:
        value = out.get(key)
        if isinstance(value, str) and value and value != "embedded" and "://" not in value \
                and not os.path.isabs(value):
            out[key] = str(root / value)
    return out


# ------------------------------------------------------------------------------ loading

def default_space_path(phase: str, quick: bool, folder: Path | None = None) -> Path:
    """search_spaces/PHASE.yaml, or PHASE_quick.yaml for --quick."""
    folder = folder or SHIPPED_SPACES
    return folder / f"{phase}{'_quick' if quick else ''}.yaml"


def load_space(path: str | Path, phase: str, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read and validate a space file for `phase`; InputError on any problem.

    overrides: constants set on the command line (--set, --seed), over the file's.
    """
    return space_from_doc(read_yaml(path), phase, Path(path), str(path), overrides)


def space_from_doc(doc: dict, phase: str, path: Path, where: str, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """A validated SearchSpace from a space file's mapping (`path`: where relative bases are
    looked up; `where`: how messages name it)."""
    kind = PHASES[phase]
    _check_top_level(doc, kind, where)
    base = _load_base(doc.get("base", "quick"), Path(path), where)
    params_doc = doc.get("params") or {}
    if not isinstance(params_doc, dict):
        raise InputError("params must be a mapping of dotted config keys", where=f"{where}: params",
                         fix="write `params:` with lines like `optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}`")
    constants, params = {}, []
    for key, spec in params_doc.items():
        item = _parse_param(str(key), spec, kind, where)
        if isinstance(item, SearchedParam):
            params.append(item)
        else:
            constants[str(key)] = item
    for key, value in (overrides or {}).items():
        _check_key(key, f"--set {key}")
        if any(p.key == key for p in params):
            raise InputError(f"{key} is searched by {where}", where=f"--set {key}",
                             fix="drop the --set, or make it a constant in the space file")
        constants[key] = value
    space = SearchSpace(
        path=where, phase=phase, base=base,
        metric=_choice_of(doc, "metric", reported_metrics() + TRAINING_METRICS, "objective", where),
        mode=_mode(doc, where),
        num_samples=_positive_int(doc, "num_samples", 1 if kind.search == "grid" else 10, where),
        max_concurrent=_positive_int(doc, "max_concurrent", 2, where),
        constants=absolute_paths(constants, Path.cwd()),
        params=_ordered(params, set(constants) | set(kind.provided), where),
        top_optimizers=_positive_int(doc, "top_optimizers", 3, where),
    )
    _check_conditions(space, kind)
    check_against_config(space, provided=_provided_values(kind))
    if "sampler" in kind.extra_keys:
        space.sampler = _sampler(doc.get("sampler", {}), f"{where}: sampler")
    space.scheduler = parse_scheduler(doc.get("scheduler"), doc.get("asha"), kind.scheduler,
                                      space.epochs(), space.params, max_concurrent=space.max_concurrent,
                                      has_sampler="sampler" in doc, where=where,
                                      epochs_overridden="train.epochs" in (overrides or {}))
    space.asha = asha_settings(space.scheduler)
    space.budget = _budget(doc.get("budget"), f"{where}: budget")
    if "points" in kind.extra_keys:
        space.points = _points(doc.get("points"), space, kind, f"{where}: points")
    if "baselines" in kind.extra_keys:
        space.baselines = _tower_list(doc.get("baselines", []), f"{where}: baselines")
        space.long_epochs = _positive_int(doc, "long_epochs", 1, where)
    return space


def _tower_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"baselines must be a list of image towers, got {value!r}", where=where,
                         fix="write e.g. `baselines: [timm:resnet18, open_clip:ViT-B-32]`")
    return list(value)


def _check_top_level(doc: dict, kind: PhaseKind, where: str) -> None:
    allowed = _COMMON_KEYS + kind.extra_keys
    for key in doc:
        if key not in allowed:
            other = [p for p, k in PHASES.items() if key in k.extra_keys]
            fix = f"`{key}` belongs in a {other[0]} space" if other else f"valid keys: {', '.join(allowed)}"
            raise InputError(f"unknown key {key!r} in a {kind.name} space", where=f"{where}: {key}", fix=fix)


def _load_base(base: Any, space_path: Path, where: str) -> Base:
    if not isinstance(base, str) or not base:
        raise InputError(f"base must be a preset name or a config path, got {base!r}", where=f"{where}: base",
                         fix="write `base: quick`, `base: default` or `base: path/to/config.yaml`")
    if base not in ("quick", "default"):
        # a config path: relative to the working directory, else to the space file's folder
        found = next((p for p in (Path(base), space_path.parent / base) if p.is_file()), None)
        if found is None:
            raise InputError(f"base config {base!r} not found", where=f"{where}: base",
                             fix="use quick, default, or a config YAML path (relative to here or to the space file)")
        base = str(found.resolve())
    raw, defaults, source = read_base(base)
    flat = flatten(raw)
    absolute = {k: v for k, v in absolute_paths(flat, Path.cwd()).items() if flat[k] != v}
    result = Base(apply_settings(raw, absolute, defaults), defaults, base)
    result.config({}, source)  # a broken base is the base's fault: say so before the params
    return result


def reported_metrics() -> tuple[str, ...]:
    """What the tasks' evaluators report: any of it can be a space's metric. (Imported here,
    not at the top: the tasks bring torch and the towers, which `--help` does not need.)"""
    from ..tasks import reported_metrics as tasks_metrics

    return tasks_metrics()


def _choice_of(doc: dict, key: str, allowed: tuple, default: str, where: str) -> str:
    value = doc.get(key, default)
    if value not in allowed:
        raise InputError(f"{key} {value!r} is not a metric train() reports", where=f"{where}: {key}",
                         fix=f"use one of: {', '.join(allowed)}")
    return value


def _mode(doc: dict, where: str) -> str:
    value = doc.get("mode", "max")
    if value not in MODES:
        raise InputError(f"mode must be max or min, got {value!r}", where=f"{where}: mode",
                         fix="write `mode: max` (higher is better: objective, recalls) or `mode: min` (a loss)")
    return value


def _budget(doc: Any, where: str) -> dict[str, float]:
    """`budget: {minutes: M}` (or `time_budget_s: S`) and/or `{epochs: E}` -> {time_budget_s, epochs}."""
    if doc is None:
        return {}
    example = "write e.g. `budget: {minutes: 30}` or `budget: {epochs: 40}`"
    if not isinstance(doc, dict) or not doc:
        raise InputError(f"budget must be a mapping, got {doc!r}", where=where, fix=example)
    for key, value in doc.items():
        if key not in ("minutes", "time_budget_s", "epochs"):
            raise InputError(f"unknown budget {key!r}", where=f"{where}.{key}",
                             fix="a budget takes minutes (or time_budget_s) and epochs; the trials are num_samples")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise InputError(f"{key} must be a number > 0, got {value!r}", where=f"{where}.{key}", fix=example)
    if "minutes" in doc and "time_budget_s" in doc:
        raise InputError("minutes and time_budget_s are the same budget", where=f"{where}.time_budget_s",
                         fix="give one of them")
    out = {}
    if "minutes" in doc or "time_budget_s" in doc:
        out["time_budget_s"] = float(doc["minutes"]) * 60 if "minutes" in doc else float(doc["time_budget_s"])
    if "epochs" in doc:
        out["epochs"] = float(doc["epochs"])
    return out


def _points(doc: Any, space: SearchSpace, kind: PhaseKind, where: str) -> list[dict[str, Any]]:
    """The file's `points:`, checked against the params (a relative param's value once its range
    is known: resolve_points), each value as its param draws it."""
    if doc is None:
        return []
    example = "write `points:` with lines like `- {optimizer.name: adamw, optimizer.lr: 2.0e-3}`"
    if not isinstance(doc, list):
        raise InputError(f"points must be a list of configurations, got {doc!r}", where=where, fix=example)
    by_key = {p.key: p for p in space.params}
    out = []
    for i, point in enumerate(doc, 1):
        at = f"{where}[{i}]"
        if not isinstance(point, dict) or not point:
            raise InputError(f"a point is a mapping of searched params to values, got {point!r}", where=at, fix=example)
        for key, value in point.items():
            _check_point_key(str(key), value, space, by_key, f"{at}.{key}")
        _check_point_conditions(point, space, kind, by_key, at)
        out.append({str(k): v if by_key[str(k)].relative else by_key[str(k)].as_drawn(v) for k, v in point.items()})
    return out


def _check_point_key(key: str, value: Any, space: SearchSpace, by_key: dict[str, SearchedParam], at: str) -> None:
    param = by_key.get(key)
    if param is None:
        what = "a constant of the space: every trial has it" if key in space.constants else "not a searched param"
        raise InputError(f"{key} is {what}", where=at,
                         fix=f"a point sets searched params: {', '.join(by_key) or 'this space searches none'}")
    if param.relative:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise InputError(f"{key} must be a number > 0, got {value!r}", where=at,
                             fix="give the value itself (it must fall in the range around phase 2's best)")
        return
    if not param.holds(value):
        raise InputError(f"{key}={value!r} is outside its distribution {_distribution_text(param)}", where=at,
                         fix="give a value the param can draw, or widen its distribution")


def _check_point_conditions(point: dict, space: SearchSpace, kind: PhaseKind, by_key: dict[str, SearchedParam],
                            at: str) -> None:
    """A conditional param's value applies only where its `when:` holds: the target must be in the
    point or a constant (or set by the previous phase: then the value is dropped if it does not apply)."""
    for key in point:
        for target, allowed in by_key[key].when.items():
            if target in point or target in space.constants:
                value = point[target] if target in point else space.constants[target]
                if value not in allowed:
                    raise InputError(f"{key} exists only when {target} is one of {list(allowed)}, and the point "
                                     f"has {target}={value!r}", where=f"{at}.{key}",
                                     fix=f"drop {key} from the point, or set {target} to one of {list(allowed)}")
            elif target not in kind.provided:
                raise InputError(f"{key} exists only when {target} is one of {list(allowed)}: the point must say "
                                 f"which {target} it is for", where=f"{at}.{key}",
                                 fix=f"add {target} to the point")


def _distribution_text(param: SearchedParam) -> str:
    values = ", ".join(map(str, param.values))
    return f"{{{param.kind}: [{values}]}}"


def resolve_points(space: SearchSpace, points: list[dict[str, Any]], known: dict[str, Any],
                   before: list[dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """`before` (points enqueued first: phase 3's incumbent) and then the file's `points` as
    `space` (its relative ranges resolved around `known`: phase 3's start) can enqueue them, and
    a note for each value left out: a param that does not apply to these trials (its `when:`
    fails on what the previous phase fixed), or a value outside its resolved range (both drawn
    instead). A point that ends up equal to one before it is run once."""
    by_key = {p.key: p for p in space.params}
    out, notes = list(before or []), []
    for i, point in enumerate(points, 1):
        kept = {}
        for key, value in point.items():
            param = by_key.get(key)
            if param is None or not param.active({**known, **point}):
                notes.append(f"point {i}'s {key} does not apply to these trials (a `when:` fails on what the "
                             f"previous phase fixed): left out")
            elif not param.holds(value):
                notes.append(f"point {i}'s {key}={value!r} is outside its range {_distribution_text(param)} "
                             f"here: drawn instead")
            else:
                kept[key] = param.as_drawn(value)
        if kept in out:
            notes.append(f"point {i} is the same as a point before it: run once")
        elif kept:
            out.append(kept)
    return out, notes


def _positive_int(doc: dict, key: str, default: int, where: str) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{key} must be a whole number >= 1, got {value!r}", where=f"{where}: {key}",
                         fix=f"write e.g. `{key}: {default}`")
    return value


def _sampler(doc: Any, where: str) -> dict[str, Any]:
    """The file's `sampler:` block, checked: its kind and the options it sets (the defaults are
    filled in by sampler_settings once the phase's final num_samples is known)."""
    if not isinstance(doc, dict):
        raise InputError(f"sampler must be a mapping, got {doc!r}", where=where, fix=f"write {_SAMPLER_EXAMPLE}")
    kind = doc.get("kind", "tpe")
    if kind == "grid":
        raise InputError("kind grid cannot drive a Bayesian phase: Optuna's GridSampler needs every parameter "
                         "as a finite list known before the first trial, and this space is drawn define-by-run "
                         "(ranges, `when:` parameters)", where=f"{where}.kind",
                         fix="use tpe, gp or random; an exhaustive grid is a grid phase's "
                             "(phase 2, or a `grid` space with {grid: [...]} parameters)")
    if kind not in SAMPLERS:
        raise InputError(f"unknown sampler kind {kind!r}", where=f"{where}.kind",
                         fix=f"use one of: {', '.join(SAMPLERS)}")
    info = SAMPLERS[kind]
    for key, value in doc.items():
        if key != "kind":
            _check_sampler_option(info, str(key), value, f"{where}.{key}")
    if doc.get("group") is True and doc.get("multivariate") is False:
        raise InputError("group needs the multivariate TPE", where=f"{where}.group",
                         fix="drop multivariate: false, or set group: false")
    return {**doc, "kind": kind}


def _check_sampler_option(info: SamplerKind, key: str, value: Any, at: str) -> None:
    if key not in info.options:
        takes = f"{info.name} takes: {', '.join(info.options)}" if info.options else f"{info.name} takes no options"
        seed = "; its seed is the phase's (--seed, or seed in params)" if key == "seed" else ""
        raise InputError(f"unknown {info.name} sampler option {key!r}", where=at, fix=takes + seed)
    if info.options[key] is bool:
        if not isinstance(value, bool):
            raise InputError(f"{key} must be true or false, got {value!r}", where=at, fix=f"write `{key}: true`")
        return
    low = 0 if key == "n_startup_trials" else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{key} must be a whole number >= {low}, got {value!r}", where=at,
                         fix=f"write e.g. `{key}: {24 if key == 'n_ei_candidates' else 3}`")


def _parse_param(key: str, spec: Any, kind: PhaseKind, where: str) -> SearchedParam | Any:
    at = f"{where}: params.{key}"
    _check_key(key, at)
    if key in kind.provided:
        raise InputError(f"{key} is set by {kind.name} from the previous phase's results", where=at,
                         fix=f"remove {key} from the file")
    if isinstance(spec, list):
        raise InputError("a list is not a parameter", where=at, fix="write {choice: [...]} (or {grid: [...]} in phase 2)")
    if not isinstance(spec, dict):
        return spec  # a constant
    dists = [k for k in spec if k in DISTRIBUTIONS]
    unknown = [k for k in spec if k not in DISTRIBUTIONS + ("when", "relative")]
    if unknown:
        raise InputError(f"unknown distribution {unknown[0]!r}", where=at,
                         fix=f"use one of: {', '.join(DISTRIBUTIONS)} (with optional when:, relative:)")
    if len(dists) != 1:
        raise InputError(f"give exactly one distribution, got {len(dists)}", where=at,
                         fix=f"e.g. {{uniform: [0.5, 1.0]}}; distributions: {', '.join(DISTRIBUTIONS)}")
    dist = dists[0]
    _check_phase_allows(dist, spec, kind, at)
    values = _check_values(dist, spec[dist], at, relative=bool(spec.get("relative")))
    return SearchedParam(key, dist, values, _parse_when(spec.get("when"), at), bool(spec.get("relative")))


def _check_key(key: str, at: str) -> None:
    """A dotted key must name a config field (or a component's registry parameter)."""
    section, _, name = key.partition(".")
    fields = Config.model_fields
    if section not in fields:
        raise InputError(f"config key {key!r} does not exist", where=at,
                         fix=f"keys start with one of: {', '.join(fields)}")
    model = fields[section].annotation
    is_section = isinstance(model, type) and hasattr(model, "model_fields")
    if not is_section or not name:
        if is_section or name:
            raise InputError(f"config key {key!r} does not exist", where=at,
                             fix=f"write {section}.KEY" if is_section else f"{section} is a plain value: write {section}")
        return
    known = name in model.model_fields or (section in COMPONENTS and "." not in name and _components_taking(section, name))
    if not known:
        raise InputError(f"config key {key!r} does not exist", where=at,
                         fix=f"{section} keys: {', '.join(model.model_fields)}" + (
                             f", or a parameter of a {section}: {', '.join(_all_component_params(section))}"
                             if section in COMPONENTS else ""))


def _check_phase_allows(dist: str, spec: dict, kind: PhaseKind, at: str) -> None:
    if kind.search == "grid" and dist != "grid":
        raise InputError(f"{kind.name} is a grid search: {dist} cannot be searched there", where=at,
                         fix="use {grid: [values]} or a constant")
    if kind.search == "optuna" and dist == "grid":
        raise InputError(f"grid is for phase 2 (a grid search); {kind.name} is a Bayesian search", where=at,
                         fix="use {choice: [values]}")
    if "relative" in spec:
        if not isinstance(spec["relative"], bool):
            raise InputError("relative must be true or false", where=at, fix="write relative: true")
        if spec["relative"] and not kind.relative:
            raise InputError(f"relative bounds need a previous phase's value: {kind.name} has none", where=at,
                             fix="give absolute bounds (relative: true is for phase 3)")
        if spec["relative"] and dist not in ("uniform", "loguniform"):
            raise InputError(f"relative works with uniform and loguniform, not {dist}", where=at,
                             fix="give absolute values")
    if "when" in spec and dist == "grid":
        raise InputError("a grid parameter cannot be conditional (the grid is a full product)", where=at,
                         fix="remove when:, or make it a constant")


def _check_values(dist: str, values: Any, at: str, relative: bool) -> tuple:
    if dist in LISTS:
        if not isinstance(values, list) or not values:
            raise InputError(f"{dist} needs a non-empty list of values", where=at, fix=f"write {{{dist}: [a, b]}}")
        if any(isinstance(v, (list, dict)) for v in values):
            raise InputError(f"{dist} values must be plain values", where=at, fix="list numbers or names")
        if len(set(map(repr, values))) != len(values):
            raise InputError(f"{dist} lists a value twice", where=at, fix="list each value once")
        return tuple(values)
    if (not isinstance(values, list) or len(values) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values)):
        raise InputError(f"{dist} needs [low, high], two numbers; got {values!r}", where=at,
                         fix=f"write {{{dist}: [low, high]}}")
    low, high = values
    if not all(math.isfinite(v) for v in values):
        raise InputError("bounds must be finite numbers", where=at, fix="give finite low and high")
    if low > high:
        raise InputError(f"low {low} > high {high}", where=at, fix=f"swap them: [{high}, {low}]")
    if dist == "int" and not all(isinstance(v, int) for v in values):
        raise InputError(f"int needs whole-number bounds, got {values}", where=at, fix="write e.g. {int: [1, 8]}")
    if dist == "loguniform" and low <= 0:
        raise InputError(f"loguniform needs low > 0, got {low}", where=at,
                         fix="use a positive low bound, or uniform for ranges that include 0")
    if relative and low <= 0:
        raise InputError(f"relative bounds are factors of the previous value and must be > 0, got {low}",
                         where=at, fix="write e.g. [0.5, 2.0]")
    return (float(low), float(high)) if dist != "int" else (low, high)


def _parse_when(when: Any, at: str) -> dict[str, tuple]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        raise InputError("when must map a parameter to the values it must take", where=f"{at}.when",
                         fix="write when: {optimizer.name: [momentum, rmsprop]}")
    out = {}
    for key, allowed in when.items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if not allowed:
            raise InputError(f"when: {key} lists no value", where=f"{at}.when", fix="list the values it applies to")
        out[str(key)] = tuple(allowed)
    return out


def _ordered(params: list[SearchedParam], given: set[str], where: str) -> list[SearchedParam]:
    """Parameters sorted so that each comes after those its `when` reads (define-by-run draws
    them in this order); an unknown target or a cycle is an error."""
    by_key = {p.key: p for p in params}
    for p in params:
        for target in p.when:
            if target not in by_key and target not in given:
                others = sorted((set(by_key) | given) - {p.key})
                raise InputError(f"when: {target!r} is not a parameter of this space", where=f"{where}: params.{p.key}.when",
                                 fix=f"condition on one of: {', '.join(others)}" if others
                                 else "condition on a parameter the file lists (a choice or a constant)")
    done: list[SearchedParam] = []
    pending = list(params)
    while pending:
        ready = [p for p in pending if all(t not in by_key or by_key[t] in done for t in p.when)]
        if not ready:
            raise InputError("the when: conditions form a cycle", where=f"{where}: params.{pending[0].key}.when",
                             fix="a parameter cannot depend, through when:, on itself")
        done.extend(ready)
        pending = [p for p in pending if p not in ready]
    return done


def _check_conditions(space: SearchSpace, kind: PhaseKind) -> None:
    """A condition listing a value its target can never take is a typo, not a wish."""
    provided = _provided_values(kind)
    for p in space.params:
        for target, allowed in p.when.items():
            possible = _possible_values(space, target, provided)
            if possible is None:
                continue  # a numeric target: any listed value may occur
            impossible = [v for v in allowed if v not in possible]
            if impossible:
                raise InputError(f"when: {target} can never be {impossible[0]!r}",
                                 where=f"{space.path}: params.{p.key}.when",
                                 fix=f"{target} takes: {', '.join(map(str, possible))}")


def _provided_values(kind: PhaseKind) -> dict[str, tuple]:
    """What a key the previous phase sets may be: every CLIP loss, every optimizer."""
    from ..losses import list_losses, loss_info
    from ..optim import list_optimizers

    options = {"loss.name": tuple(n for n in list_losses() if loss_info(n).cls.needs_text),
               "optimizer.name": tuple(list_optimizers())}
    return {k: options[k] for k in kind.provided}


def _possible_values(space: SearchSpace, key: str, provided: dict[str, tuple]) -> tuple | None:
    if key in space.constants:
        return (space.constants[key],)
    if key in provided:
        return provided[key]
    param = next((p for p in space.params if p.key == key), None)
    return param.values if param is not None and param.kind in LISTS else None


# ------------------------------------------------------------------------------ config check

def check_against_config(space: SearchSpace, provided: dict[str, tuple] | None = None,
                         carried: dict[str, Any] | None = None) -> None:
    """Build the config of every combination of component names and `when` targets, with the
    other parameters at their bounds; the first failure names the parameter and the fix.

    provided: values a key set by the previous phase may take; carried: the config values a
    phase starts from (phase 3: phase 2's best), laid under the constants.
    """
    provided, carried = provided or {}, carried or {}
    structural = _structural_keys(space, provided)
    options = [_possible_values(space, k, provided) or (None,) for k in structural]
    combos = list(itertools.islice(itertools.product(*options), _MAX_COMBINATIONS))
    for combo in combos:
        fixed = dict(zip(structural, combo))
        known = {**carried, **space.constants, **fixed}
        active = _absolute(space, [p for p in space.params if p.key not in fixed and p.active(known)], known)
        corners = max([2] + [len(p.values) for p in active if p.kind in LISTS])
        for i in range(corners):
            values = {**known, **{p.key: p.corner(i) for p in active}}
            _build_or_explain(space, values, fixed)


def _structural_keys(space: SearchSpace, provided: dict[str, tuple]) -> list[str]:
    keys = {f"{c}.name" for c in COMPONENTS} | {t for p in space.params for t in p.when}
    keys = {k for k in keys if k in provided or k in space.constants
            or any(p.key == k and p.kind in LISTS for p in space.params)}
    return sorted(keys)


def _absolute(space: SearchSpace, params: list[SearchedParam], known: dict[str, Any]) -> list[SearchedParam]:
    """Relative parameters scaled around what a trial with `known` values starts from."""
    if not any(p.relative for p in params):
        return params
    start = resolved_flat(space.base.config(known, space.path))
    return [p.scaled(_centre(space, p, start), _valid_range(p.key, start)) if p.relative else p for p in params]


def _centre(space: SearchSpace, p: SearchedParam, start: dict[str, Any]) -> float:
    centre = start.get(p.key)
    if isinstance(centre, bool) or not isinstance(centre, (int, float)) or centre <= 0:
        raise InputError(f"relative bounds need a positive value to scale; the trials start with {p.key}={centre!r}",
                         where=f"{space.path}: params.{p.key}", fix="give absolute bounds")
    return float(centre)


def _build_or_explain(space: SearchSpace, values: dict[str, Any], fixed: dict[str, Any]) -> None:
    try:
        space.base.config(values, space.path)
    except InputError as exc:
        raise _explain(exc, space, fixed) from None


def _explain(exc: InputError, space: SearchSpace, fixed: dict[str, Any]) -> InputError:
    """Turn build_config's message into one about the space: which parameter, in which trials."""
    key = (exc.where or "").rsplit(": ", 1)[-1]
    named = [k for k in space.keys if k == key or k in exc.what]
    param = max(named, key=len) if named else key
    key = param if named else key
    context = ", ".join(f"{k}={v}" for k, v in fixed.items() if v is not None)
    where = f"{space.path}: params.{param}"
    section, _, name = key.partition(".")
    if "is not a hyperparameter of" in exc.what and section in COMPONENTS:
        takers = _components_taking(section, name)
        fix = (f"make it conditional: when: {{{section}.name: [{', '.join(takers)}]}}" if takers
               else f"no {section} takes {name}; remove it")
        return InputError(f"{exc.what} (in trials with {context})", where=where, fix=fix)
    suffix = f" (in trials with {context})" if context else ""
    return InputError(f"{exc.what}{suffix}", where=where, fix=exc.fix)


def _components_taking(section: str, name: str) -> list[str]:
    from ..losses import list_losses, loss_info
    from ..optim import list_optimizers, list_schedulers, optimizer_info, scheduler_info

    registry = {"loss": (list_losses, lambda n: loss_info(n).params),
                "optimizer": (list_optimizers, lambda n: optimizer_info(n).params),
                "scheduler": (list_schedulers, lambda n: scheduler_info(n).params)}[section]
    return [n for n in registry[0]() if name in registry[1](n)]


def resolve_relative(space: SearchSpace, carried: dict[str, Any]) -> SearchSpace:
    """Phase 3: the space with relative bounds turned into absolute ones around `carried`
    (phase 2's best), clipped to each parameter's valid range; then checked again."""
    known = {**carried, **space.constants}
    # a parameter whose condition reads only fixed values and fails (isogclr's tau_init when
    # phase 2 chose sogclr) never applies in this phase: it leaves the space
    applies = [p for p in space.params if not all(t in known for t in p.when) or p.active(known)]
    params = _absolute(space, applies, known)
    resolved = copy.copy(space)
    resolved.params = params
    fixed = {k: (carried[k],) for k in PHASES[space.phase].provided if k in carried}
    check_against_config(resolved, provided=fixed, carried=carried)
    return resolved


def _valid_range(key: str, start: dict[str, Any]) -> tuple[float | None, float | None]:
    """The closed bounds of a component parameter from the registry entry of the component the
    trials run (open bounds stay unclipped: the config check reports them)."""
    from ..hparams import COMMON_OPTIMIZER_PARAMS

    section, _, name = key.partition(".")
    if section not in COMPONENTS:
        return None, None
    spec = COMMON_OPTIMIZER_PARAMS.get(name) if section == "optimizer" else None
    spec = spec or _registry_params(section, start[f"{section}.name"]).get(name)
    if spec is None:
        return None, None
    return (None if spec.low_open else spec.low), (None if spec.high_open else spec.high)


def _all_component_params(section: str) -> list[str]:
    from ..losses import list_losses
    from ..optim import list_optimizers, list_schedulers

    names = {"loss": list_losses, "optimizer": list_optimizers, "scheduler": list_schedulers}[section]()
    return sorted({k for n in names for k in _registry_params(section, n)})


def _registry_params(section: str, name: str) -> dict:
    from ..losses import loss_info
    from ..optim import optimizer_info, scheduler_info

    return dict({"loss": loss_info, "optimizer": optimizer_info, "scheduler": scheduler_info}[section](name).params)
