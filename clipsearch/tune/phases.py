"""The three phases of the CLIP protocol (docs: protocols.md A) on Ray Tune, and the protocol.

- phase 1: Optuna (TPE unless the file's `sampler:` says otherwise; define-by-run, its study in
  results/EXP/phase1/optuna.db) with ASHA early stopping, at most max_concurrent trials at a
  time; the trials ASHA stops are told to Optuna as PRUNED (clipsearch.tune.searcher).
- phase 2: a grid (tune.grid_search): phase 1's top optimizers, each with the hyperparameters
  of its best trial, x the losses, each with those of its best trial, x any grid in the file.
- phase 3: Optuna around phase 2's best (its loss and optimizer fixed, `relative: true`
  ranges centred on its values), long runs; its first trial is phase 2's best itself (an
  enqueued point); each trial keeps its best epoch.

Each phase is `prepare` (here: every check, nothing written, no Ray: a bad input is an
InputError before anything starts) then `execute` (clipsearch.tune.runner: Ray Tune, MLflow,
the phase's files). "Best" follows clipsearch.results.ranking: trials are compared at the same
epoch only.
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .. import tracking
from ..config import flatten, parse_override
from ..errors import InputError
from ..results import (BEST_JSON, PHASE_JSON, PHASES, RAY_DIR, TRIALS_CSV, carried_from_best, phase2_axes, ranked_rows,
                       read_json, read_trials_csv)
from .runner import AfterPhase, Outcome, Plan, execute
from .space import (OptunaSpace, SearchSpace, default_space_path, incumbent_point, load_space, resolve_relative,
                    sampler_settings, startup_warning)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Options:
    """What the phase commands take (see `clipsearch phase1 --help`)."""

    name: str = "default"
    quick: bool = False
    resume: bool = False
    space: Path | None = None          # one phase's space file
    spaces_dir: Path | None = None     # the folder the default space files are read from
    address: str | None = None
    tracking_uri: str | None = None
    storage: str | None = None
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    num_samples: int | None = None
    seed: int | None = None
    search_seed: int | None = None     # the Optuna sampler's seed (None: the config seed); trials keep theirs
    max_failures: int = 2
    overrides: list[str] = field(default_factory=list)
    results: Path = Path("results")
    reuse_actors: bool = True
    #: called with each phase's folder once its files are written (the CLI: its report); not
    #: part of the phase's settings, so never in phase.json
    after_phase: AfterPhase | None = None


# ------------------------------------------------------------------------------ entry points

def run_phase(phase: str, opts: Options) -> Outcome:
    from .cluster import ray_session

    plan = prepare(phase, opts)
    with ray_session(opts.address):
        return execute(plan)


def run_protocol(opts: Options) -> Iterator[Outcome]:
    """Phases 1, 2, 3 in one Ray session, each outcome yielded as its phase ends. With
    --resume, a finished phase is kept, an interrupted one continued and the rest started."""
    from .cluster import ray_session

    for phase in PHASES:  # every space file checked before the first trial
        if not (opts.resume and _phase_dir(opts, phase).exists()):
            load_space(_space_path(phase, opts), phase, space_overrides(opts))
    with ray_session(opts.address):
        for phase in PHASES:
            state = _state_if_any(_phase_dir(opts, phase)) if opts.resume else None
            if state and state.get("finished"):
                print(f"{phase}: finished before, kept", file=sys.stderr)
                continue
            phase_opts = Options(**{**vars(opts), "resume": state is not None, "space": None})
            yield execute(prepare(phase, phase_opts))


def grid_plan(space: SearchSpace, opts: Options, phase_dir: Path, phase: str) -> Plan:
    """A phase that runs every cell of the space's `{grid: [...]}` axes (no earlier phase
    feeds it): the supcon sweep, the exhaustive grid of `clipsearch bench search`."""
    return new_plan(phase, space, opts, phase_dir, grid={"carried": {}, "axes": space.grid_axes()})


def new_plan(phase: str, space: SearchSpace, opts: Options, phase_dir: Path, *, grid: dict[str, Any] | None = None,
             carried: dict[str, Any] | None = None, points: list[dict[str, Any]] | None = None, asha: bool = False,
             extra: dict[str, Any] | None = None) -> Plan:
    """The plan of a phase that has not started, from its loaded space: what every search
    (the CLIP phases, the supcon sweep, classify's methods, the benchmarks) builds its phase with.

    The trials' shared constants are filled in (the base's seed; torch threads = the trial's
    CPUs: two trials of two threads each on two cores would fight) and --num-samples applied;
    then either a grid (`grid`: {"carried", "axes"} and the optimizer / loss cells) or an Optuna
    search over the space's params, started from `carried` (values every trial takes) with
    `points` enqueued first; `asha` stops trials early by the space's asha settings; `extra`
    goes into phase.json as is. Every check of what the trials share runs here; nothing is
    written and Ray is not started."""
    space.constants.setdefault("seed", space.base.config({}, space.path).seed)
    space.constants.setdefault("train.threads", max(1, int(opts.cpus_per_trial)))
    if opts.num_samples:
        space.num_samples = opts.num_samples
    state = _common_state(phase, space, opts, phase_dir)
    optuna_space = None
    if grid is not None:
        state["grid"] = grid
    else:
        carried = dict(carried or {})
        optuna_space = OptunaSpace(space.params, {**carried, **space.constants})
        state.update(optuna_state(space, points))
        if carried:
            state["carried"] = carried
    if asha:
        state["asha"] = space.asha
    state.update(extra or {})
    _check_start(space, state)
    return Plan(phase, phase_dir, state, resume=False, optuna_space=optuna_space, after_phase=opts.after_phase)


def resumed_plan(phase_dir: Path, after_phase: AfterPhase | None = None) -> Plan | None:
    """A started phase's plan for --resume (a finished one comes back marked finished); None
    when the phase never started."""
    state = _state_if_any(phase_dir)
    if state is None:
        return None
    _check_restorable(state, phase_dir)
    return Plan(state["phase"], phase_dir, state, resume=True, after_phase=after_phase)


def run_or_keep(plan: Plan) -> Outcome:
    """Run (or go on with) the plan; a phase finished before is kept as it is."""
    if plan.resume and plan.state.get("finished"):
        print(f"{plan.phase}: finished before, kept", file=sys.stderr)
        best = read_json(plan.phase_dir / BEST_JSON, "best.json", "delete the folder and start again")
        return Outcome(plan.phase, plan.phase_dir, best, best["trials"], best["errored"], 0.0)
    return execute(plan)


# ------------------------------------------------------------------------------ prepare

def prepare(phase: str, opts: Options) -> Plan:
    """Every check of the inputs, before Ray starts or anything is written."""
    check_options(opts)
    phase_dir = _phase_dir(opts, phase)
    if opts.resume:
        state = _state_if_any(phase_dir)
        if state is None:
            raise InputError(f"there is no {phase} of experiment {opts.name!r} to resume", where=str(phase_dir),
                             fix=f"start it without --resume (clipsearch {phase} --name {opts.name})")
        _check_restorable(state, phase_dir)
        return Plan(phase, phase_dir, state, resume=True, after_phase=opts.after_phase)
    if phase_dir.exists():
        raise InputError(f"{phase} of experiment {opts.name!r} exists already", where=str(phase_dir),
                         fix="pass --resume to continue it, or choose another --name")
    space = load_space(_space_path(phase, opts), phase, space_overrides(opts))
    notes = []
    if phase == "phase1":
        plan = new_plan(phase, space, opts, phase_dir, asha=True)
    elif phase == "phase2":
        plan = new_plan(phase, space, opts, phase_dir, grid=_phase2_grid(space, phase_dir.parent))
    else:
        carried, space = _phase3_start(space, phase_dir.parent)
        point, left_out = incumbent_point(space, carried)
        notes.append(_left_out_warning(left_out, space))
        plan = new_plan(phase, space, opts, phase_dir, carried=carried, points=[point])
    # printed once every check has passed: a bad input stays one line on stderr
    for message in filter(None, [*notes, startup_warning_of(plan.state)]):
        print(message, file=sys.stderr)
    return plan


def optuna_state(space: SearchSpace, points: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the runner builds an Optuna search from (phase.json keeps it): the sampler, with
    clipsearch's defaults filled in and the start-up trials sized to the final num_samples, and
    the points the study runs first (phase 3: phase 2's best)."""
    return {"sampler": sampler_settings(space.sampler, space.num_samples), "points": list(points or [])}


def startup_warning_of(state: dict[str, Any]) -> str | None:
    """The warning line of an Optuna phase whose trials would be half or more random start-up
    draws, else None (and for the grid phases)."""
    if "sampler" not in state:
        return None
    return startup_warning(state["sampler"], state["num_samples"], state["max_concurrent"],
                           len(state["points"]), state["phase"])


def _left_out_warning(left_out: dict[str, Any], space: SearchSpace) -> str | None:
    if not left_out:
        return None
    values = ", ".join(f"{key}={value!r}" for key, value in left_out.items())
    return (f"warning: phase3: {space.path} cannot draw the {values} phase 2's best ran with: phase 3's first "
            f"trial is phase 2's best with {'that value' if len(left_out) == 1 else 'those values'} drawn instead")


def _check_restorable(state: dict, phase_dir: Path) -> None:
    """A driver killed in the seconds between writing phase.json and Tune's first snapshot
    leaves nothing Tune can restore."""
    from ray import tune

    if not state.get("finished") and not tune.Tuner.can_restore(state["experiment_path"]):
        raise InputError(f"{state['phase']} stopped before its first trial was recorded: nothing to resume",
                         where=state["experiment_path"], fix=f"delete {phase_dir} and start the phase again")


def check_options(opts: Options) -> None:
    if not _NAME.match(opts.name):
        raise InputError(f"experiment name {opts.name!r} is not a plain folder name", where="--name",
                         fix="use letters, digits, '_', '-' and '.'")
    checks = [("--cpus-per-trial", opts.cpus_per_trial > 0, "give a number > 0, e.g. 1 or 0.5"),
              ("--gpus-per-trial", opts.gpus_per_trial >= 0, "give a number >= 0, e.g. 1 or 0.5"),
              ("--max-failures", opts.max_failures >= 0, "give a whole number >= 0"),
              ("--num-samples", opts.num_samples is None or opts.num_samples >= 1, "give a whole number >= 1")]
    for option, ok, fix in checks:
        if not ok:
            raise InputError("out of range", where=option, fix=fix)


def _phase_dir(opts: Options, phase: str) -> Path:
    return (opts.results / opts.name / phase).resolve()


def _space_path(phase: str, opts: Options) -> Path:
    return opts.space or default_space_path(phase, opts.quick, opts.spaces_dir)


def space_overrides(opts: Options) -> dict[str, Any]:
    """--set key=value and --seed, as constants over the space file's."""
    out = {}
    for item in opts.overrides:
        keys, value = parse_override(item)
        out[".".join(keys)] = value
    if opts.seed is not None:
        out["seed"] = opts.seed
    return out


def _state_if_any(phase_dir: Path) -> dict | None:
    path = phase_dir / PHASE_JSON
    return read_json(path, "phase.json", "delete the phase folder and start again") if path.is_file() else None


def _common_state(phase: str, space: SearchSpace, opts: Options, phase_dir: Path) -> dict[str, Any]:
    storage = storage_path(opts, phase_dir)
    return {
        "phase": phase, "experiment": opts.name, "space": str(Path(space.path).resolve()),
        "metric": space.metric, "num_samples": space.num_samples, "max_concurrent": space.max_concurrent,
        "base": space.base.to_json(), "constants": space.constants,
        "searched": [p.key for p in space.params], "seed": space.constants["seed"],
        "search_seed": space.constants["seed"] if opts.search_seed is None else opts.search_seed,
        "storage_path": storage, "experiment_path": f"{storage}/{RAY_DIR}",
        "tracking_uri": opts.tracking_uri or tracking.default_tracking_uri(opts.results),
        "resources": {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial},
        "max_failures": opts.max_failures, "reuse_actors": opts.reuse_actors, "finished": False,
    }


def storage_path(opts: Options, phase_dir: Path) -> str:
    """Ray Tune needs an absolute path or a URI: results/EXP/PHASE by default, or
    --storage/EXP/PHASE."""
    if opts.storage is None:
        return str(phase_dir)
    if "://" in opts.storage:
        return f"{opts.storage.rstrip('/')}/{opts.name}/{phase_dir.name}"
    return str(Path(opts.storage).resolve() / opts.name / phase_dir.name)


def _check_start(space: SearchSpace, state: dict) -> None:
    """What every trial shares, checked now rather than failing in every trial: the data files
    exist, and each epoch is evaluated (ASHA and the ranking compare every epoch's metric)."""
    from ..data import check_sources
    from ..tasks import is_image_task

    cfg = space.base.config({**state.get("carried", {}), **space.constants}, space.path)
    check_sources(cfg.data, image_text=not is_image_task(cfg))
    if cfg.eval.every != 1:
        raise InputError(f"eval.every is {cfg.eval.every}: trials must be evaluated after every epoch",
                         where=f"{space.path}: eval.every", fix="set eval.every: 1 in the space's params or base")


# ------------------------------------------------------------------------------ phase 2 and 3 inputs

def _phase2_grid(space: SearchSpace, exp_dir: Path) -> dict[str, Any]:
    """The grid from phase 1's results: optimizer cells x loss cells x the file's grid axes."""
    fix = f"run clipsearch phase1 --name {exp_dir.name} first"
    best = read_json(exp_dir / "phase1" / BEST_JSON, "phase 1's best.json", fix)
    ranked = ranked_rows(read_trials_csv(exp_dir / "phase1" / TRIALS_CSV))
    if not ranked:
        raise InputError("phase 1 ranked no trial (every trial errored)", where=str(exp_dir / "phase1" / TRIALS_CSV),
                         fix="rerun phase 1")
    axes = space.grid_axes()
    default_loss = space.base.config(space.constants, space.path).loss.name
    losses = axes.pop("loss.name", None) or [space.constants.pop("loss.name", default_loss)]
    cells = phase2_axes(ranked, space.top_optimizers, losses, set(best["searched"]))
    fixed = set(space.constants) | set(axes)
    grid = {
        "optimizer": [_cell(c, "optimizer", fixed) for c in cells["optimizer"]],
        "loss": [_cell(c, "loss", fixed) for c in cells["loss"]],
        "axes": axes,
        "carried": {k: v for k, v in carried_from_best(ranked, set(best["searched"])).items() if k not in fixed},
    }
    _check_grid(space, grid)
    return grid


def _cell(values: dict[str, Any], section: str, fixed: set[str]) -> dict[str, Any]:
    """A grid cell as Tune nests it under `section` (keys without the section prefix); keys the
    phase sets itself are left to the phase."""
    return {k.split(".", 1)[1]: v for k, v in values.items() if k not in fixed}


def grid_configs(grid: dict[str, Any], constants: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cell of a phase 2 grid as a flat trial config (what Tune's grid_search expands to)."""
    axes = grid["axes"]
    out = []
    for opt, loss, *rest in itertools.product(grid["optimizer"], grid["loss"], *axes.values()):
        nested = {**grid["carried"], **constants, "optimizer": opt, "loss": loss, **dict(zip(axes, rest))}
        out.append(flatten(nested))
    return out


def _check_grid(space: SearchSpace, grid: dict[str, Any]) -> None:
    for values in grid_configs(grid, space.constants):
        space.base.config(values, f"{space.path} (phase 2 grid cell)")


def _phase3_start(space: SearchSpace, exp_dir: Path) -> tuple[dict[str, Any], SearchSpace]:
    """What phase 3 starts from (phase 2's best, its loss and optimizer fixed), and the space
    with its relative ranges centred there."""
    best = read_json(exp_dir / "phase2" / BEST_JSON, "phase 2's best.json",
                     f"run clipsearch phase2 --name {exp_dir.name} first")
    carried = {k: v for k, v in best["decided"].items() if k not in space.constants}
    for key in ("loss.name", "optimizer.name"):
        carried.setdefault(key, best["config"][key])
    return carried, resolve_relative(space, carried)
