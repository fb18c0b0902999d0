"""Running a prepared phase on Ray Tune, and what it leaves: trials.csv, best.json, MLflow.

`execute(plan)` opens the phase's MLflow parent run (reopened on --resume, closing what a killed
driver left RUNNING), builds the Tuner (OptunaSearch + ASHA, or the grid) or restores it, runs
it, and writes the phase's files from Tune's experiment folder, ranking the trials by the rule
of clipsearch.results.ranking. `clipsearch.tune.phases` prepares the plans.

What happens once a phase's files are written (the CLI: its report) is the plan's
`after_phase(phase_dir)`, given by the caller: tune knows nothing of report.
"""

from __future__ import annotations

import contextlib
import numbers
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tracking, tracking_outbox
from ..config import flatten
from ..results import (BEST_JSON, HISTORY_DIR, PHASE_JSON, STATE_DIR, TRIALS_CSV, RunFolder, TrialRecord, best_summary,
                       phase_study, rank_trials, read_history, trial_rows, write_json, write_trials_csv)
from .budget import EpochBudget, budget_line, budget_stop
from .schedulers import build_scheduler, tune_domain
from .space import Base, OptunaSpace, SearchedParam, optuna_sampler, resolved_flat

#: called with the phase folder once trials.csv, best.json and phase.json are written
AfterPhase = Callable[[Path], None]


class RunFailed(RuntimeError):
    """The phase ran but produced nothing usable (every trial errored, or it was interrupted)."""


class Interrupted(RunFailed):
    """The phase stopped with trials unfinished (Ctrl-C): --resume continues it."""


@dataclass
class Plan:
    """A phase ready to run: everything checked, nothing started."""

    phase: str
    phase_dir: Path
    state: dict[str, Any]              # written to phase.json; all a resume needs
    resume: bool
    optuna_space: OptunaSpace | None = None
    #: what the caller does once the phase's files are written (the CLI: report_after_run, which
    #: keeps a failing report from failing the phase); never written to phase.json
    after_phase: AfterPhase | None = None
    #: warnings the caller prints once every check has passed (a point's value drawn instead)
    notes: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What a finished phase gives the command: its best trial (best.json) and counts."""

    phase: str
    phase_dir: Path
    best: dict | None
    trials: int
    errored: int
    seconds: float


# ------------------------------------------------------------------------------ execute

def execute(plan: Plan) -> Outcome:
    """Run (or resume) the phase on Ray Tune; write trials.csv and best.json; log to MLflow."""
    state, started = plan.state, time.time()
    plan.phase_dir.mkdir(parents=True, exist_ok=True)
    client = tracking.client(state["tracking_uri"])
    exp_id = tracking.experiment_id(client, state["tracking_uri"], state["experiment"])
    if state.get("parent_run_id"):  # what an earlier driver's outage left queued goes first
        tracking_outbox.open_outbox(plan.phase_dir, state["tracking_uri"], exp_id, state["parent_run_id"]).replay()
    parent = tracking.phase_run(client, exp_id, state["experiment"], plan.phase, _parent_params(state),
                                run_id=state.get("parent_run_id"), datasets=lambda: _phase_datasets(state))
    if plan.resume:
        closed = tracking.close_running(client, exp_id, parent)
        print(f"{plan.phase}: resuming; {closed} MLflow trial run(s) of the interrupted driver closed as KILLED",
              file=sys.stderr)
    state.update(mlflow_experiment_id=exp_id, parent_run_id=parent)
    write_json(plan.phase_dir / PHASE_JSON, state)
    _announce(plan, state)
    # every MLflow call from here on goes through the phase's outbox: a store that stops
    # answering mid-phase gets what it missed when it answers again
    box = tracking_outbox.open_outbox(plan.phase_dir, state["tracking_uri"], exp_id, parent)
    status = "FAILED"
    try:
        # stdout carries only the command's JSON result; Tune prints its banner there
        with contextlib.redirect_stdout(sys.stderr):
            fit_started = time.time()
            _tuner(plan).fit()
        outcome = _finish(plan, box, started, time.time() - fit_started)
        status = "FINISHED" if outcome.best else "FAILED"
    except (KeyboardInterrupt, Interrupted):
        status = "KILLED"
        raise
    finally:
        _end_phase_run(box, status)
    if outcome.best is None:
        raise RunFailed(f"{plan.phase}: all {outcome.trials} trials errored; see {plan.phase_dir / TRIALS_CSV}")
    return outcome


def _end_phase_run(box: tracking_outbox.Outbox, status: str) -> None:
    """The parent run ends `status`, with the trial runs an interruption cut off; what a store
    that does not answer by now has not got is one line, with the command that replays it."""
    box.close_running(tracking_outbox.PARENT, "KILLED")
    box.end_run(tracking_outbox.PARENT, status)
    box.settle()


def _parent_params(state: dict) -> dict[str, Any]:
    keep = ("space", "metric", "num_samples", "max_concurrent", "seed", "max_failures", "storage_path")
    return {**{k: state[k] for k in keep}, "base": state["base"]["name"], "mode": mode_of(state),
            **{f"sampler.{k}": v for k, v in state.get("sampler", {}).items()},
            **{f"scheduler.{k}": v for k, v in scheduler_of(state).items()},
            **{f"budget.{k}": v for k, v in state.get("budget", {}).items()},
            **{f"const.{k}": v for k, v in state["constants"].items()}}


def _phase_datasets(state: dict) -> list:
    """The data sets the phase's trials share: those of its constants over the base."""
    from ..provenance import data_sources

    shared = {**state.get("carried", {}), **(state.get("grid") or {}).get("carried", {}), **state["constants"]}
    return data_sources(Base.from_json(state["base"]).config(shared, "phase.json"))


def _announce(plan: Plan, state: dict) -> None:
    print(f"{plan.phase} of {state['experiment']!r}: results in {plan.phase_dir}; MLflow {state['tracking_uri']} "
          f"(experiment {state['experiment']!r}, parent run {state['parent_run_id']})", file=sys.stderr)


def _tuner(plan: Plan):
    from ray import tune

    from .actor_errors import tolerate_worker_kills
    from .trainable import run_trial

    tolerate_worker_kills()  # a trial killed for memory, or with its node, fails that trial, not the phase
    state = plan.state
    base = Base.from_json(state["base"])
    trainable = tune.with_resources(tune.with_parameters(run_trial, base=base), state["resources"])
    if plan.resume:
        # Tune brings back the searcher, scheduler, callbacks and every trial from the
        # experiment folder; finished trials stay finished, the others go on from their
        # latest checkpoint (errored ones too: they get their retries again)
        return tune.Tuner.restore(state["experiment_path"], trainable, resume_errored=True)
    return tune.Tuner(trainable, param_space=_param_space(state), tune_config=_tune_config(plan),
                      run_config=_run_config(state, plan.phase_dir))


def _param_space(state: dict) -> dict[str, Any]:
    from ray import tune

    if search_of(state) == "random":  # a pbt phase: Tune draws each param itself
        known = {**state.get("carried", {}), **state["constants"]}
        drawn = {p.key: tune_domain(p) for p in searched_params(state) if p.active(known)}
        return {**known, **drawn}
    grid = state.get("grid")
    if grid is None:
        return {}  # Optuna's define-by-run function holds the whole space
    # phase 2 grids whole optimizer and loss cells (a name with its hyperparameters); every grid
    # has its plain axes; a grid with neither is one trial of the constants
    cells = {section: tune.grid_search(grid[section]) for section in ("optimizer", "loss") if grid.get(section)}
    return {**grid["carried"], **state["constants"], **cells,
            **{k: tune.grid_search(v) for k, v in grid["axes"].items()}}


def _tune_config(plan: Plan):
    from ray import tune

    state = plan.state
    budget = state.get("budget", {})
    return tune.TuneConfig(search_alg=_search_alg(plan), scheduler=build_scheduler(scheduler_of(state),
                                                                                   searched_params(state)),
                           num_samples=run_samples(state), metric=state["metric"], mode=mode_of(state),
                           reuse_actors=state["reuse_actors"], trial_dirname_creator=_trial_dirname,
                           time_budget_s=budget.get("time_budget_s"))


def _search_alg(plan: Plan):
    """Optuna behind a concurrency limit; a grid's or a pbt phase's random draws: Tune's own."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    state = plan.state
    search = search_of(state)
    if search == "optuna":
        return ConcurrencyLimiter(_optuna_search(plan), max_concurrent=state["max_concurrent"])
    if search == "random":
        return BasicVariantGenerator(max_concurrent=state["max_concurrent"], points_to_evaluate=_points(state) or None,
                                     random_state=_search_seed(state))
    return BasicVariantGenerator(max_concurrent=state["max_concurrent"])


def search_of(state: dict) -> str:
    """How a phase draws its trials: "optuna", "grid" or "random" (a pbt phase)."""
    return state.get("search", "grid" if "grid" in state else "optuna")


def scheduler_of(state: dict) -> dict[str, Any]:
    """The phase's scheduler settings (phase.json files from before `scheduler:`: ASHA or none)."""
    if "scheduler" in state:
        return state["scheduler"]
    return {"kind": "asha", **state["asha"]} if state.get("asha") else {"kind": "none"}


def mode_of(state: dict) -> str:
    return state.get("mode", "max")


def searched_params(state: dict) -> list[SearchedParam]:
    """The params the phase draws, as phase.json keeps them (relative ranges resolved)."""
    return [SearchedParam.from_json(p) for p in state.get("params", [])]


def _points(state: dict) -> list[dict[str, Any]]:
    """What the run enqueues first: the phase's points (phase 3: phase 2's best, then the file's);
    none for a run that extends a finished phase (its study ran them)."""
    return [] if state.get("run", 1) > 1 else list(state.get("points", []))


def _search_seed(state: dict) -> int:
    # the search's own seed (bench search varies it alone); phase.json files from before it: the
    # trials' seed; an extension's run draws on from seed + its run number (not the first run's draws)
    return state.get("search_seed", state["seed"]) + state.get("run", 1) - 1


def _optuna_search(plan: Plan):
    import optuna

    from .searcher import ResumableOptunaSearch
    from .studies import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    state = plan.state
    # the experiment's storage (a phase from before it: its own optuna.db) outlives the driver;
    # Ray's OptunaSearch loads the study if it exists (an extension goes on with every trial
    # the phase ran) and enqueues the points as it creates the searcher here; a resumed run's
    # searcher (sampler and study included) comes back from Tune's snapshot, not through this
    storage, study_name = phase_study(plan.phase_dir, state)
    sampler = optuna_sampler(state["sampler"], _search_seed(state))
    optuna_space = plan.optuna_space or OptunaSpace(searched_params(state),
                                                    {**state.get("carried", {}), **state["constants"]})
    return ResumableOptunaSearch(optuna_space, metric=state["metric"], mode=mode_of(state),
                                 storage=open_storage(storage), study_name=study_name, sampler=sampler,
                                 points_to_evaluate=_points(state), max_epochs=_epochs(state))


def _close_unfinished_optuna_trials(phase_dir: Path, state: dict) -> None:
    """Optuna trials still RUNNING once every Tune trial is done: those a budget cut short
    (Tune stops them without telling the searcher) are PRUNED at the epochs they reported;
    one a driver killed just after the searcher asked for it, before Tune's next snapshot (the
    resumed phase never knew it), reported nothing and is marked FAIL."""
    import optuna

    from .studies import open_storage

    storage, study_name = phase_study(phase_dir, state)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        cut = bool(trial.intermediate_values)
        study.tell(trial.number, state=optuna.trial.TrialState.PRUNED if cut else optuna.trial.TrialState.FAIL)


def _run_config(state: dict, phase_dir: Path):
    from ray import tune

    from .callbacks import DropSnapshotOlderCheckpoints, MLflowTrialRuns, ProgressLines, PruneFinished, TrialHistory

    budget = state.get("budget", {})
    stop = EpochBudget(budget["epochs"], phase_dir / HISTORY_DIR, data_fraction(state)) if "epochs" in budget else None
    return tune.RunConfig(
        # the phase's first run is RAY_DIR; a run extending it once finished: ray-2, ray-3, ...
        name=state["experiment_path"].rstrip("/").rsplit("/", 1)[-1], storage_path=state["storage_path"], verbose=0,
        stop=stop,
        failure_config=tune.FailureConfig(max_failures=state["max_failures"]),
        # Tune keeps every checkpoint; DropSnapshotOlderCheckpoints deletes those the experiment
        # snapshot no longer names (Tune's num_to_keep=1 deleted the one it still named: see there)
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        callbacks=[MLflowTrialRuns(state["tracking_uri"], state["mlflow_experiment_id"], state["parent_run_id"],
                                   state["base"], phase_dir),
                   ProgressLines(state["phase"], state["metric"], _epochs(state), _trial_count(state),
                                 mode=mode_of(state), done_before=state.get("trials_before", 0),
                                 best_before=state.get("best_before")), PruneFinished(),
                   DropSnapshotOlderCheckpoints(), TrialHistory(phase_dir / HISTORY_DIR)],
    )


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


# ------------------------------------------------------------------------------ results

def _finish(plan: Plan, box: tracking_outbox.Outbox, started: float, run_seconds: float = 0.0) -> Outcome:
    state = plan.state
    records = phase_records(state, plan.phase_dir / HISTORY_DIR)
    unfinished = [r for r in records if r.status not in ("TERMINATED", "ERROR")]
    epochs, metric, mode = _epochs(state), state["metric"], mode_of(state)
    rows = trial_rows(records, rank_trials(records, metric, mode), metric, epochs, mode)
    write_trials_csv(plan.phase_dir / TRIALS_CSV, rows)
    if unfinished:
        raise Interrupted(f"{plan.phase} was interrupted with {len(unfinished)} trial(s) unfinished; "
                        f"continue it with --resume")
    if search_of(state) == "optuna":
        _close_unfinished_optuna_trials(plan.phase_dir, state)
    _say_budget(plan, records, run_seconds)
    searched = sorted({k for r in records for k in r.config} - set(state["constants"]))
    best = best_summary(plan.phase, state["experiment"], metric, records, searched, mode)
    if best is not None:
        best["resolved_config"] = _resolved(state, records, best["trial_id"])
        write_json(plan.phase_dir / BEST_JSON, best)
    state["finished"] = True
    write_json(plan.phase_dir / PHASE_JSON, state)
    _log_phase(box, plan, best, len(records))
    if plan.after_phase is not None:
        plan.after_phase(plan.phase_dir)
    errored = sum(r.status == "ERROR" for r in records)
    return Outcome(plan.phase, plan.phase_dir, best, len(records), errored, time.time() - started)


def phase_records(state: dict, history_dir: Path) -> list[TrialRecord]:
    """Every trial of the phase: those of its first run and of each run that extended it, less
    the trials a budget stopped before their first epoch (they trained nothing)."""
    paths = [*state.get("earlier_runs", []), state["experiment_path"]]
    records = [r for path in paths for r in collect_records(path, history_dir)]
    return [r for r in records if r.history or r.status != "TERMINATED"]


def _say_budget(plan: Plan, records: list[TrialRecord], run_seconds: float) -> None:
    """The line saying which budget stopped the run (phase.json keeps it as `stopped_by`); the
    trials it cut keep best/model.pt only, as finished trials do."""
    state = plan.state
    stop = budget_stop(state.get("budget", {}), records, data_fraction(state), run_seconds)
    state["stopped_by"] = stop
    if stop is None:
        return
    print(budget_line(plan.phase, stop, len(records)), file=sys.stderr)
    for record in records:
        if record.status == "TERMINATED" and record.checkpoint:
            _drop_resume_state(record.checkpoint)


def _drop_resume_state(location: str) -> None:
    from ray import tune

    checkpoint = tune.Checkpoint(location)
    with contextlib.suppress(OSError):  # a trial PruneFinished had emptied already
        checkpoint.filesystem.delete_dir(f"{checkpoint.path}/{STATE_DIR}")


def data_fraction(state: dict) -> float:
    """data.fraction of the phase's trials (a constant or the base's; a searched one is read from
    each trial's config where it is known)."""
    return Base.from_json(state["base"]).config(state["constants"], "phase.json").data.fraction


def run_samples(state: dict) -> int:
    """The samples this run draws: num_samples, less the trials of the runs it extends."""
    return state["num_samples"] - state.get("trials_before", 0)


def _trial_count(state: dict) -> int:
    """The trials the run will run: its samples, times the cells of its grid if it has one."""
    grid = state.get("grid")
    if grid is None:
        return run_samples(state)
    cells = 1
    for values in [grid.get("optimizer"), grid.get("loss"), *grid["axes"].values()]:
        cells *= len(values) if values else 1
    return cells * state["num_samples"]


def _epochs(state: dict) -> int:
    return Base.from_json(state["base"]).config(state["constants"], "phase.json").train.epochs


def _resolved(state: dict, records: list[TrialRecord], best_id: str) -> dict:
    """The best trial's complete config, registry defaults filled in: what it really ran."""
    record = next(r for r in records if r.trial_id == best_id)
    return resolved_flat(Base.from_json(state["base"]).config(record.config, "trial config"))


def collect_records(experiment_path: str, history_dir: Path | None = None) -> list[TrialRecord]:
    """Every trial of a Tune experiment folder, as the ranking and trials.csv need them: each
    trial's epochs from Tune's progress.csv and, where given, the driver's own history
    (callbacks.TrialHistory), which holds the epochs Tune's copy can lose on a retry."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(experiment_path)
    frames = analysis.trial_dataframes
    records = []
    for trial in analysis.trials:
        frame = frames.get(trial.trial_id)
        rows = frame.to_dict("records") if frame is not None else []
        if history_dir is not None:
            rows += read_history(history_dir, trial.trial_id)
        records.append(_record(trial, rows))
    return records


def _record(trial, rows: list[dict]) -> TrialRecord:
    from ray.tune.result import AUTO_RESULT_KEYS

    from .trainable import NODE_ID

    skip = set(AUTO_RESULT_KEYS) | {"done", "trial_id", "should_checkpoint", NODE_ID}
    reported = [row for row in rows if _is_number(row.get("epoch"))]
    # an epoch reported again (after a resume from an older checkpoint, or in both sources):
    # the later row wins
    by_epoch = {int(row["epoch"]): {k: v for k, v in row.items() if k not in skip and not k.startswith("config/")}
                for row in reported}
    history = [by_epoch[epoch] for epoch in sorted(by_epoch)]
    seconds = max((float(row["time_total_s"]) for row in reported if _is_number(row.get("time_total_s"))), default=0.0)
    return TrialRecord(trial.trial_id, trial.status, flatten(trial.config), history, seconds,
                       trial.num_failures, _error_line(trial) if trial.status == "ERROR" else "",
                       checkpoint_location(trial.checkpoint))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and value == value  # NaN is not a number here


def checkpoint_location(checkpoint) -> str | None:
    """Where a checkpoint lies, as `tune.Checkpoint(...)` opens it again: a local path, or a URI
    for remote storage (--storage s3://...), whose Checkpoint.path has lost the scheme."""
    if checkpoint is None:
        return None
    scheme = _BUCKET_SCHEMES.get(checkpoint.filesystem.type_name)
    return f"{scheme}://{checkpoint.path}" if scheme else checkpoint.path


#: pyarrow filesystems whose paths start with the bucket -> their URI scheme
_BUCKET_SCHEMES = {"s3": "s3", "gcs": "gs"}


def _error_line(trial) -> str:
    """Why an errored trial errored, in one line (trial_errors.error_line: out of memory, or the
    exception's type and message)."""
    from .trial_errors import error_line

    return error_line(trial.get_error())


def _log_phase(box: tracking_outbox.Outbox, plan: Plan, best: dict | None, trials: int) -> None:
    """trials.csv, best.json and the best trial's best/model.pt as artifacts of the parent run,
    with its best_score (queued by the outbox while the store does not answer)."""
    parent = tracking_outbox.PARENT
    box.log_artifact(parent, plan.phase_dir / TRIALS_CSV)
    if best is None:
        return
    box.log_artifact(parent, plan.phase_dir / BEST_JSON)
    box.log_metrics(parent, {"best_score": best["score"], "trials": trials, "errored": best["errored"]}, step=0)
    try:
        with best_model_file(best) as model:
            if model is not None:
                box.log_artifact(parent, model, artifact_path="best")
    except Exception as exc:  # noqa: BLE001 - a checkpoint unreadable now: the phase's results stand
        tracking.not_logged(f"{plan.phase}'s best/model.pt (run {box.runs[parent]})", exc)


# ------------------------------------------------------------------------------ the best model

@contextlib.contextmanager
def best_model_file(best: dict):
    """The best trial's best/model.pt as a local file for the block, wherever Tune keeps the
    trial (the phase folder, or --storage's s3:// / gs:// bucket: then a downloaded copy); None
    when best.json names no checkpoint or the checkpoint holds no model. The one reader of a
    best trial's weights: the MLflow artifact, classify's test scores and supcon's ranking."""
    if not best.get("checkpoint"):
        yield None
        return
    from ray import tune

    with tune.Checkpoint(best["checkpoint"]).as_directory() as folder:
        model = RunFolder(Path(folder)).best_model
        yield model if model.is_file() else None


def best_model_weights(best: dict) -> dict:
    """The best trial's trainable weights (models.trainable_state), read as data only."""
    import torch

    with best_model_file(best) as model:
        if model is None:
            raise FileNotFoundError(f"the best trial's weights are missing: {best.get('checkpoint')} has no "
                                    "best/model.pt")
        return torch.load(model, map_location="cpu", weights_only=True)["model"]
