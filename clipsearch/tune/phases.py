"""The three phases of the CLIP protocol (docs: protocols.md A) on Ray Tune, and the protocol.

- phase 1: Optuna TPE (define-by-run, its study in results/EXP/phase1/optuna.db) with ASHA
  early stopping, at most max_concurrent trials at a time.
- phase 2: a grid (tune.grid_search): phase 1's top optimizers, each with the hyperparameters
  of its best trial, x the losses, each with those of its best trial, x any grid in the file.
- phase 3: Optuna TPE around phase 2's best (its loss and optimizer fixed, `relative: true`
  ranges centred on its values), long runs; each trial keeps its best epoch.

Each phase is `prepare` (every check, nothing written, no Ray: a bad input is an InputError
before anything starts) then `execute` (Ray Tune, MLflow, the phase's files). "Best" follows
clipsearch.tune.ranking: trials are compared at the same epoch only.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .. import tracking
from ..config import flatten, parse_override
from ..errors import InputError
from .ranking import TrialRecord, carried_from_best, phase2_axes, rank_trials
from .results import (BEST_JSON, PHASE_JSON, TRIALS_CSV, best_summary, ranked_rows, read_json,
                      read_trials_csv, trial_rows, write_json, write_trials_csv)
from .space import Base, OptunaSpace, SearchSpace, default_space_path, load_space, resolve_relative, resolved_flat

PHASES = ("phase1", "phase2", "phase3")
EXPERIMENT_DIR = "ray"  # Ray Tune's own experiment folder inside the phase's storage path
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunFailed(RuntimeError):
    """The phase ran but produced nothing usable (every trial errored, or it was interrupted)."""


class Interrupted(RunFailed):
    """The phase stopped with trials unfinished (Ctrl-C): --resume continues it."""


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
    max_failures: int = 2
    overrides: list[str] = field(default_factory=list)
    results: Path = Path("results")
    reuse_actors: bool = True


@dataclass
class Plan:
    phase: str
    phase_dir: Path
    state: dict[str, Any]              # written to phase.json; all a resume needs
    resume: bool
    optuna_space: OptunaSpace | None = None


@dataclass
class Outcome:
    phase: str
    phase_dir: Path
    best: dict | None
    trials: int
    errored: int
    seconds: float


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
            load_space(_space_path(phase, opts), phase, _overrides(opts))
    with ray_session(opts.address):
        for phase in PHASES:
            state = _state_if_any(_phase_dir(opts, phase)) if opts.resume else None
            if state and state.get("finished"):
                print(f"{phase}: finished before, kept", file=sys.stderr)
                continue
            phase_opts = Options(**{**vars(opts), "resume": state is not None, "space": None})
            yield execute(prepare(phase, phase_opts))


# ------------------------------------------------------------------------------ prepare

def prepare(phase: str, opts: Options) -> Plan:
    """Every check of the inputs, before Ray starts or anything is written."""
    _check_options(opts)
    phase_dir = _phase_dir(opts, phase)
    if opts.resume:
        state = _state_if_any(phase_dir)
        if state is None:
            raise InputError(f"there is no {phase} of experiment {opts.name!r} to resume", where=str(phase_dir),
                             fix=f"start it without --resume (clipsearch {phase} --name {opts.name})")
        return Plan(phase, phase_dir, state, resume=True)
    if phase_dir.exists():
        raise InputError(f"{phase} of experiment {opts.name!r} exists already", where=str(phase_dir),
                         fix="pass --resume to continue it, or choose another --name")
    space = load_space(_space_path(phase, opts), phase, _overrides(opts))
    space.constants.setdefault("seed", space.base.config({}, space.path).seed)
    # torch threads = the trial's CPUs: two trials of two threads each on two cores would fight
    space.constants.setdefault("train.threads", max(1, int(opts.cpus_per_trial)))
    if opts.num_samples:
        space.num_samples = opts.num_samples
    state = _common_state(phase, space, opts, phase_dir)
    optuna_space = None
    if phase == "phase1":
        optuna_space = OptunaSpace(space.params, space.constants)
        state["asha"] = space.asha
    elif phase == "phase2":
        state["grid"] = _phase2_grid(space, phase_dir.parent)
    else:
        carried, space = _phase3_start(space, phase_dir.parent)
        state["carried"] = carried
        optuna_space = OptunaSpace(space.params, {**carried, **space.constants})
    _check_start(space, state)
    return Plan(phase, phase_dir, state, resume=False, optuna_space=optuna_space)


def _check_options(opts: Options) -> None:
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


def _overrides(opts: Options) -> dict[str, Any]:
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
    storage = _storage_path(opts, phase_dir)
    return {
        "phase": phase, "experiment": opts.name, "space": str(Path(space.path).resolve()),
        "metric": space.metric, "num_samples": space.num_samples, "max_concurrent": space.max_concurrent,
        "base": space.base.to_json(), "constants": space.constants,
        "searched": [p.key for p in space.params], "seed": space.constants["seed"],
        "storage_path": storage, "experiment_path": f"{storage}/{EXPERIMENT_DIR}",
        "tracking_uri": opts.tracking_uri or tracking.default_tracking_uri(opts.results),
        "resources": {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial},
        "max_failures": opts.max_failures, "reuse_actors": opts.reuse_actors, "finished": False,
    }


def _storage_path(opts: Options, phase_dir: Path) -> str:
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

    cfg = space.base.config({**state.get("carried", {}), **space.constants}, space.path)
    check_sources(cfg.data)
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


# ------------------------------------------------------------------------------ execute

def execute(plan: Plan) -> Outcome:
    """Run (or resume) the phase on Ray Tune; write trials.csv and best.json; log to MLflow."""
    state, started = plan.state, time.time()
    plan.phase_dir.mkdir(parents=True, exist_ok=True)
    client = tracking.client(state["tracking_uri"])
    exp_id = tracking.experiment_id(client, state["tracking_uri"], state["experiment"])
    parent = tracking.phase_run(client, exp_id, state["experiment"], plan.phase, _parent_params(state),
                                run_id=state.get("parent_run_id"))
    if plan.resume:
        closed = tracking.close_running(client, exp_id, parent)
        print(f"{plan.phase}: resuming; {closed} MLflow trial run(s) of the interrupted driver closed as KILLED",
              file=sys.stderr)
    state.update(mlflow_experiment_id=exp_id, parent_run_id=parent)
    write_json(plan.phase_dir / PHASE_JSON, state)
    _announce(plan, state)
    status = "FAILED"
    try:
        # stdout carries only the command's JSON result; Tune prints its banner there
        with contextlib.redirect_stdout(sys.stderr):
            _tuner(plan).fit()
        outcome = _finish(plan, client, parent, started)
        status = "FINISHED" if outcome.best else "FAILED"
    except (KeyboardInterrupt, Interrupted):
        status = "KILLED"
        raise
    finally:
        tracking.close_running(client, exp_id, parent)  # trials cut off by an interruption
        tracking.end_run(client, parent, status)
    if outcome.best is None:
        raise RunFailed(f"{plan.phase}: all {outcome.trials} trials errored; see {plan.phase_dir / TRIALS_CSV}")
    return outcome


def _parent_params(state: dict) -> dict[str, Any]:
    keep = ("space", "metric", "num_samples", "max_concurrent", "seed", "max_failures", "storage_path")
    return {**{k: state[k] for k in keep}, "base": state["base"]["name"],
            **{f"const.{k}": v for k, v in state["constants"].items()}}


def _announce(plan: Plan, state: dict) -> None:
    print(f"{plan.phase} of {state['experiment']!r}: results in {plan.phase_dir}; MLflow {state['tracking_uri']} "
          f"(experiment {state['experiment']!r}, parent run {state['parent_run_id']})", file=sys.stderr)


def _tuner(plan: Plan):
    from ray import tune

    from .trainable import run_trial

    state = plan.state
    base = Base.from_json(state["base"])
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base), state["resources"])
    if plan.resume:
        # Tune brings back the searcher, scheduler, callbacks and every trial from the
        # experiment folder; finished trials stay finished, the others go on from their
        # latest checkpoint (errored ones too: they get their retries again)
        return tune.Tuner.restore(state["experiment_path"], trainable, resume_errored=True)
    return tune.Tuner(trainable, param_space=_param_space(state), tune_config=_tune_config(plan),
                      run_config=_run_config(state))


def _param_space(state: dict) -> dict[str, Any]:
    from ray import tune

    grid = state.get("grid")
    if grid is None:
        return {}  # Optuna's define-by-run function holds the whole space
    return {**grid["carried"], **state["constants"], "optimizer": tune.grid_search(grid["optimizer"]),
            "loss": tune.grid_search(grid["loss"]), **{k: tune.grid_search(v) for k, v in grid["axes"].items()}}


def _tune_config(plan: Plan):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    state = plan.state
    if plan.optuna_space is None:
        search = BasicVariantGenerator(max_concurrent=state["max_concurrent"])
    else:
        search = ConcurrencyLimiter(_optuna_search(plan), max_concurrent=state["max_concurrent"])
    asha = state.get("asha")
    # time_attr "epoch" rather than training_iteration: the same here, but the epoch is what
    # train() counts and it survives a restore unchanged
    scheduler = ASHAScheduler(time_attr="epoch", **asha) if asha else None
    return tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=state["num_samples"],
                           metric=state["metric"], mode="max", reuse_actors=state["reuse_actors"],
                           trial_dirname_creator=_trial_dirname)


def _optuna_search(plan: Plan):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    state = plan.state
    # the study lives beside the phase's files so it survives a restart of the driver
    storage = optuna.storages.RDBStorage(f"sqlite:///{plan.phase_dir / 'optuna.db'}")
    return OptunaSearch(plan.optuna_space, metric=state["metric"], mode="max", storage=storage,
                        study_name=_study_name(state),
                        sampler=optuna.samplers.TPESampler(seed=state["seed"]))


def _study_name(state: dict) -> str:
    return f"{state['experiment']}-{state['phase']}"


def _close_ghost_optuna_trials(phase_dir: Path, study_name: str) -> None:
    """A driver killed just after the searcher asked Optuna for a trial, before Tune's next
    snapshot, leaves that Optuna trial RUNNING forever (the resumed phase never knew it):
    once every Tune trial is done, such leftovers are marked FAIL."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{phase_dir / 'optuna.db'}")
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _run_config(state: dict):
    from ray import tune

    from .callbacks import MLflowTrialRuns, ProgressLines

    return tune.RunConfig(
        name=EXPERIMENT_DIR, storage_path=state["storage_path"], verbose=0,
        failure_config=tune.FailureConfig(max_failures=state["max_failures"]),
        # one checkpoint per trial: the latest, which holds best/model.pt as well
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[MLflowTrialRuns(state["tracking_uri"], state["mlflow_experiment_id"], state["parent_run_id"]),
                   ProgressLines(state["phase"], state["metric"], _epochs(state))],
    )


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


# ------------------------------------------------------------------------------ results

def _finish(plan: Plan, client, parent: str, started: float) -> Outcome:
    state = plan.state
    records = collect_records(state["experiment_path"])
    unfinished = [r for r in records if r.status not in ("TERMINATED", "ERROR")]
    epochs = _epochs(state)
    rows = trial_rows(records, rank_trials(records, state["metric"]), state["metric"], epochs)
    write_trials_csv(plan.phase_dir / TRIALS_CSV, rows)
    if unfinished:
        raise Interrupted(f"{plan.phase} was interrupted with {len(unfinished)} trial(s) unfinished; "
                        f"continue it with --resume")
    if plan.phase != "phase2":
        _close_ghost_optuna_trials(plan.phase_dir, _study_name(state))
    searched = sorted({k for r in records for k in r.config} - set(state["constants"]))
    best = best_summary(plan.phase, state["experiment"], state["metric"], records, searched)
    if best is not None:
        best["resolved_config"] = _resolved(state, records, best["trial_id"])
        write_json(plan.phase_dir / BEST_JSON, best)
    state["finished"] = True
    write_json(plan.phase_dir / PHASE_JSON, state)
    _log_phase(client, parent, plan, best, len(records))
    errored = sum(r.status == "ERROR" for r in records)
    return Outcome(plan.phase, plan.phase_dir, best, len(records), errored, time.time() - started)


def _epochs(state: dict) -> int:
    return Base.from_json(state["base"]).config(state["constants"], "phase.json").train.epochs


def _resolved(state: dict, records: list[TrialRecord], best_id: str) -> dict:
    """The best trial's complete config, registry defaults filled in: what it really ran."""
    record = next(r for r in records if r.trial_id == best_id)
    return resolved_flat(Base.from_json(state["base"]).config(record.config, "trial config"))


def collect_records(experiment_path: str) -> list[TrialRecord]:
    """Every trial of a Tune experiment folder, as the ranking and trials.csv need them."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(experiment_path)
    frames = analysis.trial_dataframes
    return [_record(trial, frames.get(trial.trial_id)) for trial in analysis.trials]


def _record(trial, frame) -> TrialRecord:
    from ray.tune.result import AUTO_RESULT_KEYS

    history = []
    if frame is not None and len(frame):
        drop = [c for c in frame.columns
                if c in AUTO_RESULT_KEYS or c in ("done", "trial_id", "should_checkpoint") or c.startswith("config/")]
        rows = frame.drop(columns=drop).to_dict("records")
        # an epoch reported again after a resume from an older checkpoint: the later report wins
        history = sorted({int(row["epoch"]): row for row in rows if row.get("epoch") == row.get("epoch")}.values(),
                         key=lambda row: row["epoch"])
    seconds = float(frame["time_total_s"].iloc[-1]) if frame is not None and len(frame) else 0.0
    checkpoint = trial.checkpoint.path if trial.checkpoint is not None else None
    return TrialRecord(trial.trial_id, trial.status, flatten(trial.config), history, seconds,
                       trial.num_failures, _error_line(trial) if trial.status == "ERROR" else "", checkpoint)


def _error_line(trial) -> str:
    """The exception of an errored trial in one line (its type and message)."""
    text = trial.get_error() or ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Fault)\b", line)]
    return (errors[-1] if errors else lines[-1] if lines else "error")[:500]


def _log_phase(client, parent: str, plan: Plan, best: dict | None, trials: int) -> None:
    """trials.csv, best.json and the best trial's best/model.pt as artifacts of the parent run."""
    client.log_artifact(parent, str(plan.phase_dir / TRIALS_CSV))
    if best is None:
        return
    client.log_artifact(parent, str(plan.phase_dir / BEST_JSON))
    tracking.log_metrics(client, parent, {"best_score": best["score"], "trials": trials,
                                          "errored": best["errored"]}, step=0)
    if best.get("checkpoint"):
        from ray import tune

        with tune.Checkpoint(best["checkpoint"]).as_directory() as folder:
            model = Path(folder) / "best" / "model.pt"
            if model.is_file():
                client.log_artifact(parent, str(model), artifact_path="best")
