"""Trial schedulers: the space file's `scheduler:` block, checked, and the Ray Tune scheduler it
builds. (The `scheduler.*` params are something else: a trial's learning-rate schedule.)

    scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}   # phase 1's default
    scheduler: {kind: hyperband, grace_period: 1, reduction_factor: 3, brackets: 3}
    scheduler: {kind: median, grace_period: 2, min_samples_required: 3}
    scheduler: {kind: pbt, perturbation_interval: 2, mutate: [optimizer.lr]}
    scheduler: {kind: none}                                        # every trial runs its epochs

Every kind counts time in epochs (time_attr "epoch", what train() reports); max_t is the trials'
train.epochs. The metric and its direction (`metric:`, `mode:`) reach the scheduler through
Tune's TuneConfig.

- asha: ASHAScheduler, one bracket: a trial below the top 1/reduction_factor at a rung
  (grace_period x reduction_factor^k epochs) stops.
- hyperband: HyperBand's brackets run asynchronously (AsyncHyperBandScheduler with
  `brackets`, Li et al. 2020): each bracket starts its rungs at a later epoch, so some trials are
  judged later. Ray's synchronous HyperBandScheduler waits for a bracket's trials to meet at a
  rung; behind a phase's concurrency limit it stopped none of 8 trials (max_concurrent 2,
  max_t 8, reduction_factor 2: every trial ran 8 epochs).
- median: MedianStoppingRule: after grace_period epochs, a trial whose best value is worse than
  the median of the other trials' running averages at the same epoch stops (once
  min_samples_required trials have reported there).
- pbt: PopulationBasedTraining (Jaderberg et al. 2017) for long runs (phase 3): every
  perturbation_interval epochs a trial in the bottom quantile_fraction of the trials running
  takes the weights of one in the top (its latest checkpoint: every epoch is one) and a mutated
  copy of its hyperparameters: each `mutate` key (default: the space's numeric optimizer.* and
  loss.* params) is multiplied by 0.8 or 1.2, or redrawn from its distribution with
  resample_probability. The population is the trials running together (max_concurrent, >= 2).
  Ray's PBT takes no search algorithm: a pbt phase draws its trials at random from the params
  (with its points, phase 3's incumbent first), and its space has no `sampler:`.
- none: FIFOScheduler: no trial stops early.

An unknown kind or option, or a bad value, is an InputError naming `scheduler.KEY` (exit 2).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

#: the config sections whose numeric params PBT mutates unless `mutate:` names its own: the
#: optimizer's are put into the restored optimizer (clipsearch.tune.trainable), the loss is
#: built from the trial's config (its learned state, e.g. per-sample temperatures, comes back
#: from the checkpoint); a model's or data's value cannot change under a checkpoint
PBT_SECTIONS = ("optimizer", "loss")
NUMERIC = ("uniform", "loguniform", "int")
_EXAMPLE = "`scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}`"


@dataclass(frozen=True)
class SchedulerKind:
    """A `scheduler: {kind: ...}`: the Ray class, the options a file may set (name -> type, the
    least value a number may take) and clipsearch's defaults."""

    name: str
    title: str                                         # what messages call it
    ray_class: str                                     # in ray.tune.schedulers
    options: dict[str, type] = field(default_factory=dict)
    least: dict[str, float] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


SCHEDULERS = {
    "asha": SchedulerKind("asha", "ASHA", "AsyncHyperBandScheduler", {"grace_period": int, "reduction_factor": int},
                          {"grace_period": 1, "reduction_factor": 2}, {"grace_period": 1, "reduction_factor": 2}),
    "hyperband": SchedulerKind("hyperband", "HyperBand", "AsyncHyperBandScheduler",
                               {"grace_period": int, "reduction_factor": int, "brackets": int},
                               {"grace_period": 1, "reduction_factor": 2, "brackets": 2},
                               {"grace_period": 1, "reduction_factor": 3, "brackets": 3}),
    "median": SchedulerKind("median", "the median stopping rule", "MedianStoppingRule", {"grace_period": int, "min_samples_required": int},
                            {"grace_period": 1, "min_samples_required": 1},
                            {"grace_period": 1, "min_samples_required": 3}),
    "pbt": SchedulerKind("pbt", "PBT", "PopulationBasedTraining",
                         {"perturbation_interval": int, "quantile_fraction": float, "resample_probability": float,
                          "mutate": list},
                         {"perturbation_interval": 1, "quantile_fraction": 0.01, "resample_probability": 0.0},
                         {"quantile_fraction": 0.25, "resample_probability": 0.25}),
    "none": SchedulerKind("none", "no scheduler", "FIFOScheduler"),
}


def parse_scheduler(block: Any, legacy_asha: Any, default_kind: str, epochs: int, params: list, *,
                    max_concurrent: int, has_sampler: bool, where: str, epochs_overridden: bool = False
                    ) -> dict[str, Any]:
    """The phase's scheduler settings (kind, options with defaults, max_t), checked.

    block: the file's `scheduler:` (None: absent); legacy_asha: its `asha:` block (phase 1 and
    classify, read as `scheduler: {kind: asha, ...}`); default_kind: the phase's without either;
    epochs: the trials' train.epochs; params: the space's SearchedParams."""
    at = f"{where}: scheduler"
    if block is not None and legacy_asha is not None:
        raise InputError("the file has both `asha:` and `scheduler:`", where=f"{where}: asha",
                         fix="keep one: `scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}` replaces `asha:`")
    if legacy_asha is not None:
        block, at = {"kind": "asha", **_mapping(legacy_asha, f"{where}: asha")}, f"{where}: asha"
    block = {"kind": default_kind} if block is None else _mapping(block, at)
    kind = block.get("kind", default_kind)
    if kind not in SCHEDULERS:
        raise InputError(f"unknown scheduler kind {kind!r}", where=f"{at}.kind", fix=f"use one of: {', '.join(SCHEDULERS)}")
    info = SCHEDULERS[kind]
    for key, value in block.items():
        if key != "kind":
            _check_option(info, str(key), value, f"{at}.{key}")
    if kind != "none" and "train.epochs" in {p.key for p in params}:
        raise InputError(f"train.epochs is searched, but {info.title} needs one max_t (the trials' train.epochs)",
                         where=f"{where}: params.train.epochs",
                         fix="make train.epochs a constant, or use `scheduler: {kind: none}`")
    settings = {**info.defaults, **block, "kind": kind}
    if kind in ("asha", "hyperband"):
        settings["grace_period"] = _first_rung(settings["grace_period"], epochs, at, epochs_overridden)
        settings["max_t"] = epochs
    if kind == "median" and settings["grace_period"] > epochs:
        raise InputError(f"grace_period {settings['grace_period']} exceeds train.epochs {epochs}",
                         where=f"{at}.grace_period", fix=f"use a grace_period <= {epochs}")
    if kind == "pbt":
        settings.update(_pbt(settings, epochs, params, max_concurrent, has_sampler, at))
    return settings


def asha_settings(settings: dict[str, Any]) -> dict[str, int]:
    """The `asha:` view of an asha scheduler ({grace_period, reduction_factor, max_t}); {} for
    any other kind (what SearchSpace.asha and phase.json's `asha` hold)."""
    if settings.get("kind") != "asha":
        return {}
    return {k: settings[k] for k in ("grace_period", "reduction_factor", "max_t")}


def _mapping(block: Any, at: str) -> dict:
    if not isinstance(block, dict):
        raise InputError(f"must be a mapping, got {block!r}", where=at, fix=f"write {_EXAMPLE}")
    return dict(block)


def _check_option(info: SchedulerKind, key: str, value: Any, at: str) -> None:
    if key not in info.options:
        takes = f"{info.name} takes: {', '.join(info.options)}" if info.options else f"{info.name} takes no options"
        extra = "; max_t is train.epochs" if key == "max_t" else "; time is counted in epochs" if key == "time_attr" else ""
        raise InputError(f"unknown {info.name} scheduler option {key!r}", where=at, fix=takes + extra)
    wanted, least = info.options[key], info.least.get(key)
    if wanted is list:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise InputError(f"{key} must be a list of searched params, got {value!r}", where=at,
                             fix=f"write `{key}: [optimizer.lr, optimizer.weight_decay]`")
        return
    number = (int,) if wanted is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, number) or value < least:
        kind = "a whole number" if wanted is int else "a number"
        raise InputError(f"{key} must be {kind} >= {least}, got {value!r}", where=at,
                         fix=f"write e.g. `{key}: {info.defaults.get(key, least)}`")
    if key in ("quantile_fraction", "resample_probability") and value > (0.5 if key == "quantile_fraction" else 1.0):
        raise InputError(f"{key} must be at most {0.5 if key == 'quantile_fraction' else 1.0}, got {value!r}",
                         where=at, fix=f"write e.g. `{key}: 0.25`")


def _first_rung(grace: int, epochs: int, at: str, epochs_overridden: bool) -> int:
    if grace > epochs and epochs_overridden:
        # --set train.epochs=1 on a space made for longer trials (a smoke test): the first rung
        # moves to the last epoch rather than refusing what the command line asked for
        print(f"note: {at}.grace_period {grace} is more than --set train.epochs={epochs}; "
              f"the first rung is epoch {epochs}", file=sys.stderr)
        return epochs
    if grace > epochs:
        raise InputError(f"grace_period {grace} exceeds train.epochs {epochs}", where=f"{at}.grace_period",
                         fix=f"use a grace_period <= {epochs}")
    return grace


def _pbt(settings: dict[str, Any], epochs: int, params: list, max_concurrent: int, has_sampler: bool,
         at: str) -> dict[str, Any]:
    """PBT's checks: what it mutates, how often, and what it cannot work with."""
    if has_sampler:
        raise InputError("pbt draws its trials at random: Ray's PopulationBasedTraining takes no search "
                         "algorithm, so an Optuna sampler cannot drive it", where=f"{at}.kind",
                         fix="remove `sampler:`, or use another scheduler kind (asha, hyperband, median)")
    if max_concurrent < 2:
        raise InputError(f"pbt's population is the trials running together; max_concurrent is {max_concurrent}",
                         where=f"{at}.kind", fix="set max_concurrent: 2 or more")
    by_key = {p.key: p for p in params}
    conditional = [p.key for p in params if any(t in by_key for t in p.when)]
    if conditional:
        raise InputError(f"pbt draws every param at random, and {conditional[0]} exists only under a `when:` "
                         f"on another searched param", where=f"{at}.kind",
                         fix="make the condition's target a constant, or use another scheduler kind")
    mutate = settings.get("mutate") or [p.key for p in params if p.kind in NUMERIC
                                        and p.key.split(".", 1)[0] in PBT_SECTIONS]
    for key in mutate:
        if key not in by_key or by_key[key].kind not in NUMERIC:
            numeric = [p.key for p in params if p.kind in NUMERIC]
            raise InputError(f"{key} is not a numeric searched param: pbt mutates those", where=f"{at}.mutate",
                             fix=f"list some of: {', '.join(numeric)}" if numeric else "search a uniform, loguniform "
                                 "or int param")
    if not mutate:
        raise InputError("pbt has nothing to mutate: the space searches no numeric optimizer.* or loss.* param",
                         where=f"{at}.kind", fix="search e.g. `optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}`, "
                                                 "or name the params with `mutate: [...]`")
    interval = settings.get("perturbation_interval", max(1, epochs // 4))
    if interval >= epochs:
        raise InputError(f"perturbation_interval {interval} leaves no perturbation in {epochs} epochs",
                         where=f"{at}.perturbation_interval", fix=f"use a perturbation_interval < {epochs}")
    return {"mutate": list(mutate), "perturbation_interval": interval}


# ------------------------------------------------------------------------------ Ray

def build_scheduler(settings: dict[str, Any], params: list):
    """The Ray Tune scheduler of parse_scheduler's settings; params: the phase's SearchedParams
    (their final bounds: phase 3's relative ranges resolved), which PBT mutates."""
    from ray.tune import schedulers

    kind = settings.get("kind", "none")
    options = {k: v for k, v in settings.items() if k != "kind"}
    # time_attr "epoch" rather than training_iteration: the same here, but the epoch is what
    # train() counts and it survives a restore unchanged
    if kind == "asha":
        return schedulers.ASHAScheduler(time_attr="epoch", brackets=1, **options)
    if kind == "hyperband":
        return schedulers.AsyncHyperBandScheduler(time_attr="epoch", **options)
    if kind == "median":
        return schedulers.MedianStoppingRule(time_attr="epoch", **options)
    if kind == "pbt":
        by_key = {p.key: p for p in params}
        mutations = {key: tune_domain(by_key[key]) for key in options.pop("mutate")}
        return schedulers.PopulationBasedTraining(time_attr="epoch", hyperparam_mutations=mutations, **options)
    return schedulers.FIFOScheduler()


def tune_domain(param):
    """A searched param as Tune's own distribution (what PBT and its random draws use)."""
    from ray import tune

    if param.kind in ("choice", "grid"):
        return tune.choice(list(param.values))
    if param.kind == "int":
        return tune.randint(param.values[0], param.values[1] + 1)  # Tune's upper bound is exclusive
    low, high = param.values
    return tune.loguniform(low, high) if param.kind == "loguniform" else tune.uniform(low, high)
