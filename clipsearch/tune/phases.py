"""The three phases of the CLIP protocol (docs: protocols.md A) on Ray Tune, and the protocol.

- phase 1: Optuna (TPE unless the file's `sampler:` says otherwise; define-by-run, its study
  EXP-phase1 in the experiment's storage, results/EXP/optuna.db by default) with ASHA early
  stopping (or the file's `scheduler:`), at most max_concurrent trials at a time; the trials
  ASHA stops are told to Optuna as PRUNED (clipsearch.tune.searcher).
- phase 2: a grid (tune.grid_search): phase 1's top optimizers, each with the hyperparameters
  of its best trial, x the losses, each with those of its best trial, x any grid in the file.
- phase 3: Optuna around phase 2's best (its loss and optimizer fixed, `relative: true`
  ranges centred on its values), long runs; its first trial is phase 2's best itself (an
  enqueued point, before the file's `points:`); each trial keeps its best epoch.

`--resume` goes on with an interrupted phase; of a finished one it keeps it as it is, or, with a
larger `--num-samples`, extends it: a new Tune run (ray-2/, ...) whose searcher loads the same
Optuna study, so the new trials are drawn knowing every earlier one (and never repeat one), and
whose trials.csv and best.json cover both runs.

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
from ..results import (BEST_JSON, PHASE_JSON, PHASES, RAY_DIR, TRIALS_CSV, carried_from_best, phase2_axes,
                       phase_study, ranked_rows, ray_run_dir, read_json, read_trials_csv)
from .driver_lock import experiment_lock
from .runner import AfterPhase, Outcome, Plan, data_fraction, execute, search_of, searched_params
from .space import (OptunaSpace, SearchSpace, default_space_path, incumbent_point, load_space, resolve_points,
                    resolve_relative, sampler_settings, startup_warning)
from .space_change import check_space_on_resume, space_document
from .studies import check_storage, experiment_storage

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
    optuna_storage: str | None = None  # the experiment's Optuna storage (None: results/EXP/optuna.db)
    budget_minutes: float | None = None  # over the space file's budget: wall time of the run
    budget_epochs: float | None = None   # ... full-data epochs over the phase's trials
    overrides: list[str] = field(default_factory=list)
    results: Path = Path("results")
    reuse_actors: bool = True
    #: called with each phase's folder once its files are written (the CLI: its report); not
    #: part of the phase's settings, so never in phase.json
    after_phase: AfterPhase | None = None


# ------------------------------------------------------------------------------ entry points

def run_phase(phase: str, opts: Options) -> Outcome:
    from .cluster import ray_session

    check_options(opts)  # --name is a plain folder name before its lock file is looked for
    # a second driver of the experiment is refused before any check or write (driver_lock)
    with experiment_lock(opts.results / opts.name) as lock:
        plan = prepare(phase, opts)
        lock.take()
        if plan.resume and plan.state.get("finished"):
            return run_or_keep(plan)  # kept: no Ray needed
        with ray_session(opts.address):
            return execute(plan)


def run_protocol(opts: Options) -> Iterator[Outcome]:
    """Phases 1, 2, 3 in one Ray session, each outcome yielded as its phase ends. With
    --resume, a finished phase is kept, an interrupted one continued and the rest started."""
    check_options(opts)
    with experiment_lock(opts.results / opts.name) as lock:
        for phase in PHASES:  # every space file checked before the first trial
            if not (opts.resume and _phase_dir(opts, phase).exists()):
                load_space(_space_path(phase, opts), phase, space_overrides(opts))
        lock.take()
        yield from _protocol_phases(opts)


def _protocol_phases(opts: Options) -> Iterator[Outcome]:
    from .cluster import ray_session

    with ray_session(opts.address):
        for phase in PHASES:
            state = _state_if_any(_phase_dir(opts, phase)) if opts.resume else None
            if state and state.get("finished"):
                print(_kept_line(phase, _phase_dir(opts, phase)), file=sys.stderr)
                continue
            phase_opts = Options(**{**vars(opts), "resume": state is not None, "space": None})
            yield execute(prepare(phase, phase_opts))


def grid_plan(space: SearchSpace, opts: Options, phase_dir: Path, phase: str) -> Plan:
    """A phase that runs every cell of the space's `{grid: [...]}` axes (no earlier phase
    feeds it): the supcon sweep, the exhaustive grid of `clipsearch bench search`."""
    return new_plan(phase, space, opts, phase_dir, grid={"carried": {}, "axes": space.grid_axes()})


def new_plan(phase: str, space: SearchSpace, opts: Options, phase_dir: Path, *, grid: dict[str, Any] | None = None,
             carried: dict[str, Any] | None = None, points: list[dict[str, Any]] | None = None,
             extra: dict[str, Any] | None = None) -> Plan:
    """The plan of a phase that has not started, from its loaded space: what every search
    (the CLIP phases, the supcon sweep, classify's methods, the benchmarks) builds its phase with.

    The trials' shared constants are filled in (the base's seed; torch threads = the trial's
    CPUs: two trials of two threads each on two cores would fight) and --num-samples and the
    command line's budgets applied; then either a grid (`grid`: {"carried", "axes"} and the
    optimizer / loss cells) or a search over the space's params (Optuna's, or with a pbt
    scheduler Tune's random draws), started from `carried` (values every trial takes) with
    `points` enqueued first, then the file's `points:`; the space's scheduler (ASHA, ...) stops
    trials early; `extra` goes into phase.json as is. Every check of what the trials share runs
    here; nothing is written and Ray is not started. The plan's notes are the warnings its
    caller prints once every check has passed."""
    space.constants.setdefault("seed", space.base.config({}, space.path).seed)
    space.constants.setdefault("train.threads", max(1, int(opts.cpus_per_trial)))
    if opts.num_samples:
        space.num_samples = opts.num_samples
    state = _common_state(phase, space, opts, phase_dir)
    optuna_space, notes = None, []
    if grid is not None:
        state.update(grid=grid, search="grid")
    else:
        carried = dict(carried or {})
        known = {**carried, **space.constants}
        enqueued, notes = resolve_points(space, space.points, known, before=points)
        notes = [f"warning: {phase}: {space.path}: {note}" for note in notes]
        state["params"] = [p.to_json() for p in space.params]
        if space.scheduler.get("kind") == "pbt":
            state.update(search="random", points=enqueued)
        else:
            optuna_space = OptunaSpace(space.params, known)
            storage = experiment_storage(opts.optuna_storage, opts.results / opts.name)
            check_storage(storage)  # an earlier phase's database, corrupt or locked: refused now
            state.update(search="optuna", **optuna_state(space, enqueued), optuna_storage=storage,
                         study_name=f"{opts.name}-{phase}")
        if carried:
            state["carried"] = carried
    state.update(extra or {})
    _check_start(space, state)
    return Plan(phase, phase_dir, state, resume=False, optuna_space=optuna_space, after_phase=opts.after_phase,
                notes=notes)


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
        print(_kept_line(plan.phase, plan.phase_dir), file=sys.stderr)
        best = read_json(plan.phase_dir / BEST_JSON, "best.json", "delete the folder and start again")
        return Outcome(plan.phase, plan.phase_dir, best, best["trials"], best["errored"], 0.0)
    return execute(plan)


def _kept_line(phase: str, phase_dir: Path) -> str:
    ran = _trials_run(phase_dir)
    return f"{phase}: finished before, kept ({ran} trials; --resume --num-samples N with N > {ran} adds trials)"


def _trials_run(phase_dir: Path) -> int:
    path = phase_dir / TRIALS_CSV
    return len(read_trials_csv(path)) if path.is_file() else 0


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
        return _resumed(phase, phase_dir, state, opts)
    if phase_dir.exists():
        raise InputError(f"{phase} of experiment {opts.name!r} exists already", where=str(phase_dir),
                         fix="pass --resume to continue it, or choose another --name")
    space_file = _space_path(phase, opts)
    space = load_space(space_file, phase, space_overrides(opts))
    notes = []
    if phase == "phase1":
        plan = new_plan(phase, space, opts, phase_dir)
    elif phase == "phase2":
        plan = new_plan(phase, space, opts, phase_dir, grid=_phase2_grid(space, phase_dir.parent))
    else:
        carried, space = _phase3_start(space, phase_dir.parent)
        point, left_out = incumbent_point(space, carried)
        notes.append(_left_out_warning(left_out, space))
        plan = new_plan(phase, space, opts, phase_dir, carried=carried, points=[point])
    plan.state["space_document"] = space_document(space_file)  # what a --resume compares the file with
    # printed once every check has passed: a bad input stays one line on stderr
    for message in filter(None, [*notes, *plan.notes, startup_warning_of(plan.state)]):
        print(message, file=sys.stderr)
    return plan


# ------------------------------------------------------------------------------ resume and extend

def _resumed(phase: str, phase_dir: Path, state: dict, opts: Options) -> Plan:
    """--resume: an interrupted run goes on; a finished phase is kept, or extended to a larger
    --num-samples."""
    _check_same_storage(state, phase_dir, opts)
    check_space_on_resume(state, _named_space(phase, opts))
    study = phase_study(phase_dir, state)
    if study is not None:
        check_storage(study[0])
    state = _before_unstarted_extension(state)
    _check_restorable(state, phase_dir)
    if not state.get("finished"):
        if opts.num_samples is not None:
            print(f"note: {phase}: the interrupted run goes on with its trials; once it has finished, "
                  f"--resume --num-samples {opts.num_samples} extends it", file=sys.stderr)
        return Plan(phase, phase_dir, state, resume=True, after_phase=opts.after_phase)
    ran = _trials_run(phase_dir)
    if opts.num_samples is None or opts.num_samples <= ran:
        return Plan(phase, phase_dir, state, resume=True, after_phase=opts.after_phase)  # kept (run_or_keep)
    plan = extension_plan(phase_dir, state, opts, ran)
    print(f"{phase}: finished before with {ran} trials; extending it to {opts.num_samples} "
          f"({opts.num_samples - ran} more) in {plan.state['experiment_path']}"
          + (f", drawn on from the Optuna study {plan.state['study_name']}" if search_of(state) == "optuna" else ""),
          file=sys.stderr)
    return plan


def extension_plan(phase_dir: Path, state: dict, opts: Options, ran: int) -> Plan:
    """A finished phase's next run, of opts.num_samples - `ran` trials: a new Tune experiment
    folder (ray-2, ray-3, ...) beside the first, drawing from the same params; an Optuna phase's
    searcher loads the phase's study, so it knows every trial the phase ran and enqueues nothing
    again. The command line's budgets replace the phase's."""
    phase = state["phase"]
    if search_of(state) == "grid":
        raise InputError(f"{phase} is a grid: every cell has run, and more samples would repeat them (the "
                         f"trials train with the same seed)", where="--num-samples",
                         fix="drop --num-samples to keep the phase, or start another --name")
    if "params" not in state:
        raise InputError(f"{phase} ran before clipsearch kept its params in phase.json: it cannot be extended",
                         where=str(phase_dir / PHASE_JSON), fix="start another --name with the --num-samples you want")
    run = state.get("run", 1) + 1
    best_file = phase_dir / BEST_JSON  # none when every trial errored
    best = read_json(best_file, "best.json", "delete the phase folder and start again") if best_file.is_file() else {}
    extended = {**state, "run": run, "before_extension": state, "trials_before": ran, "best_before": best.get("score"),
                "num_samples": opts.num_samples,
                "earlier_runs": [*state.get("earlier_runs", []), state["experiment_path"]],
                "experiment_path": f"{state['storage_path']}/{ray_run_dir(run)}", "finished": False,
                "stopped_by": None, "budget": _budget(state.get("budget", {}), opts)}
    _check_epochs_left(extended, phase_dir)
    optuna_space = None
    if search_of(state) == "optuna":
        optuna_space = OptunaSpace(searched_params(state), {**state.get("carried", {}), **state["constants"]})
    return Plan(phase, phase_dir, extended, resume=False, optuna_space=optuna_space, after_phase=opts.after_phase)


def _before_unstarted_extension(state: dict) -> dict:
    """An extension whose driver died before Tune's first snapshot left nothing to resume: the
    phase is as it was before it (finished), and can be extended again."""
    from ray import tune

    if state.get("finished") or "before_extension" not in state or tune.Tuner.can_restore(state["experiment_path"]):
        return state
    print(f"note: {state['phase']}: its extension stopped before its first trial was recorded; the phase is "
          f"as it was before it", file=sys.stderr)
    return state["before_extension"]


def _check_same_storage(state: dict, phase_dir: Path, opts: Options) -> None:
    study = phase_study(phase_dir, state)
    if opts.optuna_storage is None or study is None:
        return
    given = experiment_storage(opts.optuna_storage, opts.results / opts.name)
    if given != study[0]:
        raise InputError(f"{state['phase']} keeps its Optuna study in {study[0]}", where="--optuna-storage",
                         fix="drop --optuna-storage on --resume (the phase's storage is in its phase.json)")


def _check_epochs_left(state: dict, phase_dir: Path) -> None:
    """An extension of a phase whose epoch budget is spent would stop before its first trial."""
    limit = state["budget"].get("epochs")
    if limit is None:
        return
    rows = read_trials_csv(phase_dir / TRIALS_CSV)
    fraction = data_fraction(state)
    spent = sum((row.get("epochs") or 0) * float(row["config"].get("data.fraction", fraction)) for row in rows)
    if spent >= limit:
        raise InputError(f"{state['phase']} has spent its epoch budget ({spent:g} of {limit:g} full-data epochs)",
                         where="--num-samples", fix=f"raise the budget with --budget-epochs (more than {spent:g})")


def _budget(budget: dict[str, float], opts: Options) -> dict[str, float]:
    """The space's budget with the command line's over it."""
    out = dict(budget)
    if opts.budget_minutes is not None:
        out["time_budget_s"] = float(opts.budget_minutes) * 60
    if opts.budget_epochs is not None:
        out["epochs"] = float(opts.budget_epochs)
    return out


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
              ("--num-samples", opts.num_samples is None or opts.num_samples >= 1, "give a whole number >= 1"),
              ("--budget-minutes", opts.budget_minutes is None or opts.budget_minutes > 0, "give a number > 0"),
              ("--budget-epochs", opts.budget_epochs is None or opts.budget_epochs > 0, "give a number > 0")]
    for option, ok, fix in checks:
        if not ok:
            raise InputError("out of range", where=option, fix=fix)


def _phase_dir(opts: Options, phase: str) -> Path:
    return (opts.results / opts.name / phase).resolve()


def _space_path(phase: str, opts: Options) -> Path:
    return opts.space or default_space_path(phase, opts.quick, opts.spaces_dir)


def _named_space(phase: str, opts: Options) -> Path | None:
    """The phase's space file when the command line names it (--space, --spaces), else None."""
    return _space_path(phase, opts) if opts.space or opts.spaces_dir else None


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
        "metric": space.metric, "mode": space.mode, "num_samples": space.num_samples,
        "max_concurrent": space.max_concurrent, "scheduler": space.scheduler,
        **({"asha": space.asha} if space.asha else {}), "budget": _budget(space.budget, opts),
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
