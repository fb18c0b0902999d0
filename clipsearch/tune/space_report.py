"""What a search space will run, in words: what `clipsearch space check` and every search
command's `--dry-run` print.

`describe(space)` reads a validated SearchSpace (and, once earlier phases have run, what they
fixed: phase 2's grid cells, phase 3's start); `describe_plan(plan)` reads a prepared phase.
Neither starts anything or writes anything; neither imports Ray.

The space file's keys are read where the SearchSpace has them (`mode:`, `points:`,
`scheduler:`, `budget:` came later than the rest: a field a SearchSpace lacks reads as absent).
Epochs are counted in trial-epochs (epochs summed over trials) and in full-data epochs (times
data.fraction): what a phase may spend at most, and with ASHA about what it spends when each
rung stops the share it is set to stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .space import (PHASES, Base, SearchedParam, SearchSpace, random_start_trials, sampler_settings,
                    startup_warning)

if TYPE_CHECKING:
    from .runner import Plan

#: the earlier result each phase starts from (what the file alone cannot tell)
_NEEDS = {"phase2": "phase 1", "phase3": "phase 2"}
INDENT = "  "


@dataclass(frozen=True)
class Budget:
    """A phase's trials (at most: phase 2's before phase 1 has run) and what they may train;
    `trials_text` says how the count comes about."""

    trials: int
    trials_text: str
    epochs: float | None           # train.epochs of a trial (its largest value when searched)
    fraction: float | None         # data.fraction (likewise)
    extra_epochs: float = 0.0      # trial-epochs beyond trials x epochs (the supcon long run)
    asha_epochs: float | None = None   # ASHA's expected epochs per trial

    @property
    def trial_epochs(self) -> float | None:
        if self.epochs is None:
            return None
        return self.trials * self.epochs + self.extra_epochs


# ------------------------------------------------------------------------------ entry points

def describe(space: SearchSpace, *, grid: dict[str, Any] | None = None, carried: dict[str, Any] | None = None,
             points: list[dict[str, Any]] | None = None, title: str | None = None, label: str | None = None) -> str:
    """The validated space as lines of text. grid: phase 2's grid once phase 1 has run
    ({"optimizer", "loss", "axes", "carried"}, as the plan holds it); carried: the values every
    trial starts from (phase 3: phase 2's best); points: what the study runs first, once known
    (a plan's; None: the file's `points:`, after phase 2's best in phase 3); title: the first
    line; label: what the warnings call the phase (its plan's name: classify-ce)."""
    kind = PHASES[space.phase]
    budget = budget_of(space, grid)
    first = _first_points(space, points)
    lines = [title or f"{space.path}: {space.phase} ({_search_name(kind.search)})",
             f"base: {space.base.name}", _metric_line(space),
             f"trials: {budget.trials_text}; {space.max_concurrent} at a time"]
    lines += [f"run first ({len(first)}):", *(INDENT + point for point in first)] if first else []
    lines += _sampler_lines(space, len(first), label or space.phase)
    lines += _scheduler_lines(space)
    lines += _grid_lines(space, grid)
    lines += _start_lines(space, carried)
    lines += _param_lines(space)
    lines += _constant_lines(space)
    lines += _budget_lines(space, budget)
    return "\n".join([lines[0], *(INDENT + line for line in lines[1:])])


def describe_plan(plan: Plan, kind: str | None = None) -> str:
    """A prepared phase: what it runs (its plan's state: the final trial count, sampler, seed and
    constants; phase 2's cells; phase 3's ranges around phase 2's best). kind: the space's phase
    kind when the plan's name is not one (classify's methods: "classify")."""
    state = plan.state
    if plan.resume:
        return _resumed(plan)
    space = space_of(plan, kind or plan.phase)
    return describe(space, grid=state.get("grid") if space.phase == "phase2" else None,
                    carried=state.get("carried"), points=state.get("points"),
                    title=f"{plan.phase}: {state['space']} -> {plan.phase_dir}", label=plan.phase)


def space_of(plan: Plan, kind: str) -> SearchSpace:
    """The space a fresh plan runs, rebuilt from its state (searched params from its Optuna space
    or its state, relative ranges already resolved; a grid's from its axes)."""
    state = plan.state
    if plan.optuna_space is not None:
        params = list(plan.optuna_space.params)
    elif "params" in state:  # a search without Optuna (a pbt phase's random draws)
        params = [SearchedParam.from_json(p) for p in state["params"]]
    else:
        params = [SearchedParam(k, "grid", tuple(v)) for k, v in state.get("grid", {}).get("axes", {}).items()]
    space = SearchSpace(path=state["space"], phase=kind, base=Base.from_json(state["base"]), metric=state["metric"],
                        num_samples=state["num_samples"], max_concurrent=state["max_concurrent"],
                        constants=dict(state["constants"]), params=params, asha=state.get("asha", {}),
                        sampler=state.get("sampler", {}))
    for key in ("mode", "scheduler", "budget", "long_epochs"):  # the keys a plan may hold
        if key in state:
            setattr(space, key, state[key])
    return space


def _resumed(plan: Plan) -> str:
    state = plan.state
    doing = ("finished before: kept as it is" if state.get("finished")
             else "interrupted: its finished trials stay, the others go on from their latest checkpoints")
    recorded = [f"{what} {state[key]}" for what, key in (("space", "space"), ("metric", "metric"),
                                                         ("trials", "num_samples")) if key in state]
    recorded.append(f"searched: {', '.join(state.get('searched', [])) or 'nothing'}")
    return f"{plan.phase}: --resume of {plan.phase_dir}: {doing}\n{INDENT}{', '.join(recorded)}"


def describe_before(space: SearchSpace) -> str:
    """A phase of the protocol whose inputs do not exist yet: the file, and what waits on them."""
    return describe(space, title=f"{space.phase}: {Path(space.path).resolve()} (starts from {_NEEDS[space.phase]}'s results, "
                                 f"known once {_NEEDS[space.phase]} has run)")


# ------------------------------------------------------------------------------ the budget

def budget_of(space: SearchSpace, grid: dict[str, Any] | None = None) -> Budget:
    """The trials the space runs and the epochs each may train."""
    epochs, fraction = _largest(space, "train.epochs"), _largest(space, "data.fraction")
    scheduler = scheduler_of(space)
    asha = _asha_epochs_per_trial(scheduler) if scheduler["kind"] == "asha" else None
    n = space.num_samples
    repeats = "" if n == 1 else f" x {n} repeats"
    if space.phase == "phase2":
        return _phase2_budget(space, grid, epochs, fraction, repeats)
    if PHASES[space.phase].search == "grid":
        cells = math.prod(len(v) for v in space.grid_axes().values())
        axes = " x ".join(f"{len(v)} {k}" for k, v in space.grid_axes().items()) or "1 cell"
        trials, text = cells * n, f"{cells * n} = {axes}{repeats}"
        if space.phase == "supcon_sweep":  # then the best cell, long_epochs long
            text += f", then the best cell for {space.long_epochs} epochs"
            return Budget(trials, text, epochs, fraction, extra_epochs=space.long_epochs)
        return Budget(trials, text, epochs, fraction)
    return Budget(n, str(n), epochs, fraction, asha_epochs=asha)


def _phase2_budget(space: SearchSpace, grid: dict[str, Any] | None, epochs, fraction, repeats: str) -> Budget:
    axes = dict(space.grid_axes())
    if grid is not None:
        sizes = [_count(len(grid["optimizer"]), "optimizer"), _count(len(grid["loss"]), "loss")]
        sizes += [f"{len(v)} {k}" for k, v in grid["axes"].items()]
        cells = len(grid["optimizer"]) * len(grid["loss"]) * math.prod(len(v) for v in grid["axes"].values())
        text = " x ".join(sizes)
        return Budget(cells * space.num_samples, f"{cells * space.num_samples} = {text}{repeats}", epochs, fraction)
    losses = len(axes.pop("loss.name", None) or [None])
    others = math.prod(len(v) for v in axes.values())
    most = space.top_optimizers * losses * others * space.num_samples
    text = " x ".join([f"phase 1's top {_count(space.top_optimizers, 'optimizer')}", _count(losses, "loss"),
                       *(f"{len(v)} {k}" for k, v in axes.items())])
    return Budget(most, f"at most {most} = {text}{repeats} (the optimizers known after phase 1)", epochs, fraction)


def _largest(space: SearchSpace, key: str) -> float | None:
    """A constant's value, or a searched numeric key's largest (None: relative to an earlier
    phase's value, unknown before it runs)."""
    param = next((p for p in space.params if p.key == key), None)
    if param is None:
        cfg = space.base.config(space.constants, space.path)
        section, name = key.split(".")
        return getattr(getattr(cfg, section), name)
    if param.relative:
        return None
    return max(v for v in param.values if isinstance(v, (int, float)))


def scheduler_of(space: SearchSpace) -> dict[str, Any]:
    """The space's trial scheduler as {kind, options}: its `scheduler:` settings, or (a
    SearchSpace without them) ASHA's from `asha:`, or none."""
    scheduler = getattr(space, "scheduler", None)
    if scheduler:
        return scheduler
    return {"kind": "asha", **space.asha} if space.asha else {"kind": "none"}


def asha_rungs(asha: dict[str, int], bracket: int = 0) -> list[int]:
    """The epochs where ASHA compares trials: Ray's rungs of bracket s (grace_period x
    reduction_factor^(k+s)), below max_t (a trial at max_t ends anyway)."""
    grace, factor, max_t = asha["grace_period"], asha["reduction_factor"], asha["max_t"]
    count = int(math.log(max_t / grace) / math.log(factor) - bracket + 1)
    return sorted(r for r in (grace * factor ** (k + bracket) for k in range(count)) if r < max_t)


def _asha_epochs_per_trial(asha: dict[str, int]) -> float:
    """Expected epochs of a trial when each rung keeps 1/reduction_factor of the trials that reach
    it: every trial trains to the first rung, 1/f of them on to the next, and so on to max_t."""
    rungs, factor = asha_rungs(asha), asha["reduction_factor"]
    if not rungs:
        return float(asha["max_t"])
    ends = [*rungs[1:], asha["max_t"]]
    return rungs[0] + sum((end - start) / factor ** (i + 1) for i, (start, end) in enumerate(zip(rungs, ends)))


def _budget_lines(space: SearchSpace, budget: Budget) -> list[str]:
    """The file's `budget:` (if any), then the epochs the trials may spend."""
    limits = getattr(space, "budget", None) or {}
    lines = []
    if "time_budget_s" in limits:
        lines.append(f"budget: {_num(limits['time_budget_s'] / 60)} minutes of wall time, then every trial stops")
    line = _epochs_line(budget)
    if "epochs" in limits:
        line += f"; budget: {_num(limits['epochs'])} full-data epochs over the phase's trials, then every trial stops"
    return [*lines, line]


def _epochs_line(budget: Budget) -> str:
    if budget.trial_epochs is None:
        return "epochs: not known before the earlier phase has run (train.epochs is relative to its value)"
    most = budget.trial_epochs
    line = f"epochs: at most {_num(most)} trial-epochs ({_count(budget.trials, 'trial')} x {_num(budget.epochs)}"
    line += f" + {_num(budget.extra_epochs)}" if budget.extra_epochs else ""
    if budget.fraction is None:
        return line + "); data.fraction is relative to the earlier phase's value"
    line += f") = {_num(most * budget.fraction)} full-data epochs at data.fraction {_num(budget.fraction)}"
    if budget.asha_epochs is not None and budget.asha_epochs < budget.epochs:
        expected = budget.trials * budget.asha_epochs
        line += (f"; with ASHA about {_num(expected)} ({_num(expected * budget.fraction)} full-data) if each rung "
                 f"stops its share (more in a short phase: the first trials at a rung always go on)")
    return line


# ------------------------------------------------------------------------------ the lines

def _search_name(search: str) -> str:
    return {"optuna": "Optuna search", "grid": "grid"}[search]


def _metric_line(space: SearchSpace) -> str:
    mode = getattr(space, "mode", None) or "max"
    return f"metric: {space.metric} ({'maximised' if mode == 'max' else 'minimised' if mode == 'min' else mode})"


def _first_points(space: SearchSpace, points: list[dict[str, Any]] | None) -> list[str]:
    """What the study runs before it draws: the plan's points, or the file's (phase 3: after
    phase 2's best)."""
    if points is not None:
        return [_values(p) for p in points]
    incumbent = ["phase 2's best (known after phase 2)"] if space.phase == "phase3" else []
    return [*incumbent, *(_values(p) for p in getattr(space, "points", None) or [])]


def _sampler_lines(space: SearchSpace, enqueued: int, label: str) -> list[str]:
    if PHASES[space.phase].search != "optuna":
        return []
    if scheduler_of(space)["kind"] == "pbt":
        return ["sampler: none: PBT takes no search algorithm, Tune draws the trials at random"]
    n, settings = space.num_samples, sampler_settings(space.sampler, space.num_samples)
    options = _values({k: v for k, v in settings.items() if k not in ("kind", "n_startup_trials")})
    line = f"sampler: {settings['kind']}" + (f" ({options})" if options else "")
    if "n_startup_trials" in settings:
        random = random_start_trials(settings, n, space.max_concurrent, enqueued)
        first = f"{enqueued} run first, " if enqueued else ""
        line += (f"; n_startup_trials {settings['n_startup_trials']}: {first}{random} of {n} trials drawn at random, "
                 f"{max(0, n - random - enqueued)} by the model")
    warning = startup_warning(settings, n, space.max_concurrent, enqueued, label)
    return [line, *([warning] if warning else [])]


def _scheduler_lines(space: SearchSpace) -> list[str]:
    settings = scheduler_of(space)
    kind = settings["kind"]
    options = {k: v for k, v in settings.items() if k != "kind"}
    if kind == "none":
        return ["scheduler: none (every trial runs its train.epochs)"]
    if kind == "asha":
        return [f"scheduler: ASHA on epochs ({_values(options)}); {_rungs_text(settings, 0)}"]
    if kind == "hyperband":
        brackets = [f"bracket {s + 1}: {_rungs_text(settings, s)}" for s in range(settings["brackets"])]
        return [f"scheduler: HyperBand, asynchronous, on epochs ({_values(options)})", *brackets]
    if kind == "median":
        return [f"scheduler: median stopping rule ({_values(options)}): after {settings['grace_period']} epochs a trial "
                f"whose best is below the median of the others' running averages stops"]
    if kind == "pbt":
        return [f"scheduler: PBT ({_values(options)}): every {settings['perturbation_interval']} epochs the bottom "
                f"{_num(settings['quantile_fraction'])} of the running trials take a top trial's weights and mutated "
                f"values of {', '.join(settings['mutate'])}"]
    return [f"scheduler: {kind} ({_values(options)})"]


def _rungs_text(settings: dict[str, Any], bracket: int) -> str:
    rungs = asha_rungs(settings, bracket)
    if not rungs:
        return "no rung below max_t: no trial stops early"
    return (f"rung{'s' if len(rungs) > 1 else ''} at epoch{'s' if len(rungs) > 1 else ''} {', '.join(map(str, rungs))}: "
            f"a trial below the top 1/{settings['reduction_factor']} there stops")


def _grid_lines(space: SearchSpace, grid: dict[str, Any] | None) -> list[str]:
    if space.phase == "supcon_sweep":
        tuned = space.base.config(space.constants, space.path).model.image_tower
        towers = [*space.baselines, *([] if tuned in space.baselines else [tuned])]
        return [f"baselines (ranked zero-shot first, not trained): {', '.join(towers)}",
                f"long run: the best cell, {space.long_epochs} epochs"]
    if space.phase != "phase2":
        return []
    if grid is None:
        return [f"grid cells: known after phase 1: its top {space.top_optimizers} optimizers, each with its best "
                f"trial's optimizer values, x each loss with the loss values of its best phase 1 trial"]
    lines = ["optimizer cells (from phase 1):", *(INDENT + _values(c) for c in grid["optimizer"]),
             "loss cells:", *(INDENT + _values(c) for c in grid["loss"])]
    if grid.get("carried"):
        lines.append(f"from phase 1's best trial: {_values(grid['carried'])}")
    return lines


def _start_lines(space: SearchSpace, carried: dict[str, Any] | None) -> list[str]:
    if carried:
        source = f" (from {_NEEDS[space.phase]}'s best)" if space.phase in _NEEDS else ""
        return [f"every trial starts from{source}: {_values(carried)}"]
    if space.phase == "phase3":
        return ["every trial starts from phase 2's best (known after phase 2): its loss.name, optimizer.name "
                "and values; relative ranges are factors of them"]
    return []


def _param_lines(space: SearchSpace) -> list[str]:
    if not space.params:
        return ["searched: nothing"]
    width = max(len(p.key) for p in space.params)
    return [f"searched ({len(space.params)}):", *(f"{INDENT}{p.key:<{width}}  {_distribution(p)}" for p in space.params)]


def _distribution(p: SearchedParam) -> str:
    if p.kind in ("choice", "grid"):
        text = f"{p.kind} [{', '.join(map(_num, p.values))}]"
    elif p.relative:
        text = f"{p.kind} x[{_num(p.values[0])}, {_num(p.values[1])}] of the earlier phase's value"
    else:
        text = f"{p.kind} [{_num(p.values[0])}, {_num(p.values[1])}]"
    if p.when:
        text += "  when " + " and ".join(f"{k} in [{', '.join(map(_num, v))}]" for k, v in p.when.items())
    return text


def _constant_lines(space: SearchSpace) -> list[str]:
    if not space.constants:
        return ["constants: none"]
    return [f"constants ({len(space.constants)}):",
            *(f"{INDENT}{k} = {_num(v)}" for k, v in sorted(space.constants.items()))]


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}{'es' if thing.endswith('s') else 's'}"


def _values(values: Any) -> str:
    if not isinstance(values, dict):
        return _num(values)
    return ", ".join(f"{k}={_num(v)}" for k, v in values.items())


def _num(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(map(_num, value))}]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
