"""`clipsearch confirm results/EXP`: the top configurations of the experiment's last finished
phase trained again with new seeds, on the phase's own budget, and whether its winner's lead is
larger than what a training seed alone changes (the judging: clipsearch.results.confirm).

The top K distinct configurations of the phase's trials.csv (ranked rows, best first) each run
S new training seeds (the config key `seed`: the phase's seed + 1 ... + S; the phase's own run
is left out, since it was picked as the best of many and is biased up), with every other key as
the phase's trial ran it: its train.epochs and data.fraction included, no early stopping. Each
configuration is a grid phase of its own, over the seeds (results/EXP/confirm/topN/, MLflow
parent run confirm-topN with a child run per seed), built with phases.new_plan and run by
runner.execute in one Ray session: the configurations differ in several keys at once and Tune's
grid crosses its axes, so one grid cannot hold K configurations x S seeds without running
every mix of them. confirm/request.json keeps what was asked, so --resume goes on with it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..results import BEST_JSON, PHASE_JSON, PHASES, TRIALS_CSV, ranked_rows, read_json, read_trials_csv, write_json
from ..results.confirm import ConfirmedConfig, confirm_document, write_confirm
from ..results.layout import CONFIRM_DIR
from .driver_lock import experiment_lock
from .phases import Options, check_options, new_plan, resumed_plan, run_or_keep
from .runner import Plan, RunFailed
from .space import Base, SearchSpace

REQUEST_JSON = "request.json"
#: keys a configuration does not carry into its reruns: the seed is what varies, threads follow
#: the confirm's --cpus-per-trial
_NOT_CARRIED = ("seed", "train.threads")


@dataclass
class Confirm:
    """A confirm ready to run: everything checked, nothing started."""

    root: Path                          # results/EXP/confirm
    request: dict[str, Any]             # request.json: the phase, the seeds, the configurations
    plans: list[Plan]


# ------------------------------------------------------------------------------ the command

def confirm_experiment(path: Path, top: int | None, seeds: int | None, opts: Options,
                       address: str | None = None) -> tuple[Confirm, dict[str, Any]]:
    """prepare_confirm, then run_confirm, holding the experiment's driver lock: a confirm while
    a search or another confirm of the experiment runs is refused with one line (exit 2) before
    anything is read or written, as a second search is (driver_lock)."""
    path = Path(path).resolve()
    with experiment_lock(path.parent if (path / PHASE_JSON).is_file() else path) as lock:
        confirm = prepare_confirm(path, top, seeds, opts)
        lock.take()
        return confirm, run_confirm(confirm, address)


# ------------------------------------------------------------------------------ prepare

def prepare_confirm(exp_dir: Path, top: int | None, seeds: int | None, opts: Options) -> Confirm:
    """Every check, before Ray starts or anything is written: the experiment and its last
    finished phase exist, --top is at most its distinct ranked configurations, --seeds >= 2."""
    check_options(opts)
    exp_dir = Path(exp_dir).resolve()
    root = exp_dir / CONFIRM_DIR
    if opts.resume:
        return _resumed(root, top, seeds, opts)
    top, seeds = 3 if top is None else top, 3 if seeds is None else seeds
    _check_counts(top, seeds)
    if root.exists():
        raise InputError(f"experiment {exp_dir.name!r} has a confirm already", where=str(root),
                         fix="pass --resume to continue it, or delete the folder to confirm again")
    phase_dir, state = last_finished_phase(exp_dir)
    request = _request(phase_dir, state, top, seeds)
    return Confirm(root, request, [_plan(request, i, opts) for i in range(top)])


def _check_counts(top: int, seeds: int) -> None:
    if top < 1:
        raise InputError(f"--top is {top}", where="--top", fix="give 1 or more configurations to confirm")
    if seeds < 2:
        raise InputError(f"--seeds is {seeds}: one seed has no spread to compare a lead with", where="--seeds",
                         fix="give 2 or more (3 at least; the interval narrows as seeds are added)")


def last_finished_phase(exp_dir: Path) -> tuple[Path, dict]:
    """results/EXP/PHASE of the last of phase3, phase2, phase1 that finished (or `exp_dir`
    itself when it is a finished phase's folder), with its phase.json."""
    if not exp_dir.is_dir():
        raise InputError("no such experiment", where=str(exp_dir), fix="give results/EXP of a search that has run")
    for folder in [exp_dir, *(exp_dir / phase for phase in reversed(PHASES))]:
        state_file = folder / PHASE_JSON
        if state_file.is_file():
            state = read_json(state_file, "phase.json", "rerun the phase")
            if state.get("finished") and (folder / BEST_JSON).is_file():
                return folder, state
    raise InputError(f"experiment {exp_dir.name!r} has no finished phase (phase.json marked finished, with a "
                     "best.json)", where=str(exp_dir), fix=f"finish a phase first, e.g. clipsearch phase1 --name "
                                                           f"{exp_dir.name} (or --resume the interrupted one)")


def _request(phase_dir: Path, state: dict, top: int, seeds: int) -> dict[str, Any]:
    configs = top_configurations(phase_dir, state)
    if top > len(configs):
        raise InputError(f"--top {top}, but {state['phase']} ranked {len(configs)} distinct configuration(s)",
                         where="--top", fix=f"give --top {len(configs)} or less")
    return {"phase_dir": str(phase_dir), "phase": state["phase"], "experiment": state["experiment"],
            "metric": state["metric"], "mode": state.get("mode", "max"),
            "seeds": [state["seed"] + i for i in range(1, seeds + 1)], "configs": configs[:top]}


def top_configurations(phase_dir: Path, state: dict) -> list[dict[str, Any]]:
    """The phase's ranked trials, best first, one per distinct configuration (phase 2 repeats
    its grid with --num-samples): rank, trial id, the config it ran, its score and what it decided."""
    metric, constants = state["metric"], set(state["constants"])
    seen, out = set(), []
    for row in ranked_rows(read_trials_csv(phase_dir / TRIALS_CSV)):
        config = {k: v for k, v in row["config"].items() if k not in _NOT_CARRIED}
        key = json.dumps(config, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        out.append({"rank": row["rank"], "trial_id": row["trial_id"], "config": config,
                    "phase_score": row.get(f"best_{metric}"),
                    "decided": {k: v for k, v in config.items() if k not in constants}})
    return out


def _plan(request: dict[str, Any], index: int, opts: Options) -> Plan:
    """Configuration `index`'s phase: a grid over the seeds, every other key as it ran."""
    state = read_json(Path(request["phase_dir"]) / PHASE_JSON, "phase.json", "rerun the phase")
    chosen = request["configs"][index]
    name = f"top{index + 1}"
    space = SearchSpace(path=state["space"], phase="confirm", base=Base.from_json(state["base"]),
                        metric=state["metric"], num_samples=1,
                        max_concurrent=min(len(request["seeds"]), state["max_concurrent"]),
                        constants=dict(chosen["config"]), params=[])
    phase_opts = Options(**{**vars(opts), "name": request["experiment"], "num_samples": None, "after_phase": None,
                            "tracking_uri": opts.tracking_uri or state["tracking_uri"]})
    extra = {"confirm": {"of": request["phase_dir"], "rank": chosen["rank"], "trial_id": chosen["trial_id"]}}
    if "mode" in state:
        extra["mode"] = state["mode"]
    return new_plan(f"confirm-{name}", space, phase_opts, Path(request["phase_dir"]).parent / CONFIRM_DIR / name,
                    grid={"carried": {}, "axes": {"seed": list(request["seeds"])}}, extra=extra)


def _resumed(root: Path, top: int | None, seeds: int | None, opts: Options) -> Confirm:
    request_file = root / REQUEST_JSON
    if not request_file.is_file():
        raise InputError("there is no confirm to resume", where=str(root),
                         fix="start it without --resume" + (f" (delete {root} first)" if root.exists() else ""))
    request = read_json(request_file, "the confirm's request.json", f"delete {root} and confirm again")
    asked = {"--top": (top, len(request["configs"])), "--seeds": (seeds, len(request["seeds"]))}
    for option, (given, started) in asked.items():
        if given is not None and given != started:
            raise InputError(f"this confirm was started with {option} {started}", where=option,
                             fix=f"resume with {option} {started} (or leave it out), or delete {root} to start again")
    plans = [resumed_plan(root / f"top{i + 1}") or _plan(request, i, opts) for i in range(len(request["configs"]))]
    return Confirm(root, request, plans)


# ------------------------------------------------------------------------------ run

def run_confirm(confirm: Confirm, address: str | None = None) -> dict[str, Any]:
    """Every configuration's seeds in one Ray session, then confirm.json and confirm.md; returns
    confirm.json's content."""
    from .cluster import ray_session

    confirm.root.mkdir(parents=True, exist_ok=True)
    write_json(confirm.root / REQUEST_JSON, confirm.request)
    with ray_session(address):
        for plan in confirm.plans:
            try:
                run_or_keep(plan)
            except RunFailed as exc:
                if exc.__class__ is not RunFailed:  # Interrupted: --resume goes on with it
                    raise
                print(f"{plan.phase}: {exc}; the configuration is judged without it", file=sys.stderr)
    document = judge(confirm)
    write_confirm(confirm.root, document)
    return document


def judge(confirm: Confirm) -> dict[str, Any]:
    """Each configuration's value at each seed (its phase's trials.csv), and the verdict."""
    request = confirm.request
    configs = []
    for i, chosen in enumerate(request["configs"]):
        values = _seed_values(confirm.root / f"top{i + 1}", request["metric"])
        configs.append(ConfirmedConfig(chosen["rank"], chosen["trial_id"], chosen["decided"], chosen["phase_score"],
                                       {seed: values.get(seed) for seed in request["seeds"]}))
    return confirm_document(request["phase"], request["metric"], request["mode"], _epochs(confirm.plans[0].state),
                            configs)


def _seed_values(phase_dir: Path, metric: str) -> dict[int, float]:
    """seed -> the score of that seed's trial (its best epoch's metric, as the phase ranks)."""
    if not (phase_dir / TRIALS_CSV).is_file():
        return {}
    return {row["config"]["seed"]: row[f"best_{metric}"] for row in read_trials_csv(phase_dir / TRIALS_CSV)
            if row["status"] == "TERMINATED" and row.get(f"best_{metric}") is not None}


def _epochs(state: dict) -> int:
    return Base.from_json(state["base"]).config(state["constants"], "phase.json").train.epochs
