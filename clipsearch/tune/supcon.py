"""SupCon fine-tuning of a vision tower for cross-domain retrieval (protocols.md B, seed 000).

`clipsearch sweep supcon` runs, under results/EXP/supcon/:
1. zero-shot baselines: each tower of the space's `baselines:` list (and always the tower that
   is fine-tuned) embeds the queries and the gallery untouched -> baselines.csv, one MLflow run
   `supcon-baselines` with a child run per tower;
2. the sweep: a grid over the space's `{grid: [...]}` parameters (seed 000: learning rate x
   weight decay, plus the temperature it could not search), each trial `train.epochs` long
   (1 in seed 000), through Ray Tune and MLflow like the phases -> sweep/ (trials.csv, best.json);
3. the long run: the sweep's best cell trained `long_epochs` epochs, keeping its best epoch ->
   long/, then the competition's submission of that best epoch (submission.json: {query file:
   [top-10 gallery files]}) and final.json;
4. results.csv / results.md: one row per baseline, per sweep cell and for the long run.

The metric is the image task's "query_gallery" evaluator (clipsearch.tasks.query_gallery): score =
600 Hit@1 + 300 Hit@5 + 100 Hit@10, objective = score / 10.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import tracking
from ..errors import InputError
from ..results import (BEST_JSON, PHASE_JSON, RAY_DIR, TRIALS_CSV, atomic_write_text, read_json, read_trials_csv,
                       write_json)
from .phases import Options, check_options, grid_plan, resumed_plan, run_or_keep, space_overrides, storage_path
from .runner import Outcome, Plan, best_model_weights
from .space import SearchSpace, default_space_path, load_space
from .space_change import check_space_on_resume, space_document

PROTOCOL = "supcon"
SPACE = "supcon_sweep"
BASELINES_CSV, RESULTS_CSV, RESULTS_MD = "baselines.csv", "results.csv", "results.md"
SUBMISSION_JSON, FINAL_JSON = "submission.json", "final.json"
#: the metrics every table shows, in this order
SHOWN = ("score", "accuracy1", "hit1", "hit5", "hit10", "precision5", "mapr")


@dataclass
class SupConRun:
    root: Path
    baselines: list[dict[str, Any]]
    sweep: Outcome
    long: Outcome
    final: dict[str, Any]


def supcon_dir(opts: Options) -> Path:
    return (opts.results / opts.name / PROTOCOL).resolve()


# ------------------------------------------------------------------------------ space and checks

def load_supcon_space(opts: Options) -> SearchSpace:
    path = opts.space or default_space_path(SPACE, opts.quick, opts.spaces_dir)
    space = load_space(path, SPACE, space_overrides(opts))
    cfg = space.base.config(space.constants, space.path)
    if cfg.loss.name != "supcon" or cfg.image.evaluator != "query_gallery":
        raise InputError(f"the sweep fine-tunes with loss supcon scored by the query_gallery evaluator; this space "
                         f"gives loss {cfg.loss.name!r}, evaluator {cfg.image.evaluator!r}", where=f"{space.path}: params",
                         fix="set loss.name: supcon and image.evaluator: query_gallery")
    return space


def check_data(space: SearchSpace) -> None:
    """Read the training images and the query/gallery sets once, so that a bad folder, an
    unlabelled query folder, an empty gallery or a batch larger than the data fails now."""
    from ..data.labelled import load_labelled_splits
    from ..data.views import BalancedBatches
    from ..tasks.query_gallery import load_retrieval_sets

    cfg = space.base.config(space.constants, space.path)
    splits = load_labelled_splits(cfg.data, cfg.image)
    # built once here so that its checks (k x n against the data) fail now and its note on
    # classes smaller than n is printed by the driver, not only inside a trial's log
    BalancedBatches(splits.train, cfg.train.batch_size, cfg.image.images_per_class, augment=None)
    load_retrieval_sets(cfg)


def baseline_towers(space: SearchSpace) -> list[str]:
    """The towers ranked zero-shot: the file's list, with the fine-tuned tower always in it."""
    from ..models import build_image_tower

    tuned = space.base.config(space.constants, space.path).model.image_tower
    towers = list(space.baselines or [])
    if tuned not in towers:
        towers.append(tuned)
    for tower in towers:
        try:
            build_image_tower(tower)  # a name timm / open_clip does not know fails here, not mid-run
        except InputError as exc:
            raise InputError(exc.what, where=f"{space.path}: baselines", fix=exc.fix) from None
    return towers


# ------------------------------------------------------------------------------ plans

def sweep_plan(space: SearchSpace, opts: Options, root: Path) -> Plan:
    plan = grid_plan(space, opts, root / "sweep", f"{PROTOCOL}-sweep")
    plan.state["long_epochs"] = space.long_epochs
    plan.state["space_document"] = space_document(space.path)  # what a --resume compares the file with
    return plan


def long_plan(sweep_state: dict, opts: Options, root: Path) -> Plan:
    """The sweep's best cell, `long_epochs` epochs: a one-cell grid."""
    best = read_json(root / "sweep" / BEST_JSON, "the sweep's best.json", "run the sweep first")
    state = {**sweep_state, "phase": f"{PROTOCOL}-long", "finished": False, "parent_run_id": None,
             "num_samples": 1, "searched": [], "max_concurrent": 1}
    state["constants"] = {**sweep_state["constants"], **best["decided"], "train.epochs": sweep_state["long_epochs"]}
    state["grid"] = {"carried": {}, "axes": {}}
    storage = storage_path(opts, root / "long")
    state.update(storage_path=storage, experiment_path=f"{storage}/{RAY_DIR}")
    return Plan(state["phase"], root / "long", state, resume=False, after_phase=opts.after_phase)


# ------------------------------------------------------------------------------ run

@dataclass
class SupConPlan:
    """The sweep ready to start: every input checked, nothing written, Ray not started."""

    root: Path
    sweep: Plan
    space: SearchSpace | None          # None when --resume goes on with a started sweep
    towers: list[str]                  # the towers the baselines rank (none on --resume: kept)


def prepare_supcon(opts: Options) -> SupConPlan:
    """Every check of `sweep supcon` (what its --dry-run runs too): the options, the folder,
    the space, the baseline towers, the data; nothing written."""
    check_options(opts)
    root = supcon_dir(opts)
    if opts.resume and not (root / "sweep" / PHASE_JSON).is_file():
        # a run stopped during the baselines has nothing Tune could continue
        fix = (f"delete {root} and start again" if root.exists()
               else f"start it without --resume (clipsearch sweep supcon --name {opts.name})")
        raise InputError(f"there is no supcon sweep of experiment {opts.name!r} to resume", where=str(root), fix=fix)
    if not opts.resume and root.exists():
        raise InputError(f"the supcon sweep of experiment {opts.name!r} exists already", where=str(root),
                         fix="pass --resume to continue it, or choose another --name")
    if opts.resume:
        sweep = resumed_plan(root / "sweep", opts.after_phase)
        check_space_on_resume(sweep.state, opts.space or (default_space_path(SPACE, opts.quick, opts.spaces_dir)
                                                          if opts.spaces_dir else None))
        return SupConPlan(root, sweep, None, [])
    space = load_supcon_space(opts)
    towers = baseline_towers(space)
    check_data(space)
    return SupConPlan(root, sweep_plan(space, opts, root), space, towers)


def run_supcon(opts: Options) -> SupConRun:
    """Baselines, the sweep, the long run, the tables; every input checked before Ray starts."""
    from .driver_lock import experiment_lock

    check_options(opts)  # --name is a plain folder name before its lock file is looked for
    with experiment_lock(opts.results / opts.name) as lock:  # one driver per experiment
        prepared = prepare_supcon(opts)
        lock.take()
        return _run_prepared(prepared, opts)


def _run_prepared(prepared: SupConPlan, opts: Options) -> SupConRun:
    from .cluster import ray_session

    root, sweep = prepared.root, prepared.sweep
    if prepared.space is None:
        baselines = _read_csv(root / BASELINES_CSV)
    else:
        baselines = run_baselines(prepared.space, prepared.towers, sweep.state, root)
    with ray_session(opts.address):
        sweep_outcome = run_or_keep(sweep)
        long = ((resumed_plan(root / "long", opts.after_phase) if opts.resume else None)
                or long_plan(sweep.state, opts, root))
        long_outcome = run_or_keep(long)
    final = finish(root, long.state)
    write_tables(root, baselines, final)
    return SupConRun(root, baselines, sweep_outcome, long_outcome, final)


def run_baselines(space: SearchSpace, towers: list[str], state: dict, root: Path) -> list[dict[str, Any]]:
    """Each tower, untouched, on the query/gallery sets; baselines.csv and MLflow runs."""
    import torch

    from ..models import build_image_encoder, load_trainable_state, resolve_device
    from ..tasks.query_gallery import load_retrieval_sets, rank_gallery

    cfg = space.base.config(space.constants, space.path)
    sets = load_retrieval_sets(cfg)
    device = resolve_device(cfg.train.device)
    rows = []
    for tower in towers:
        torch.manual_seed(cfg.seed)
        model_cfg = cfg.model.model_copy(update={"image_tower": tower,
                                                 "image_weights": cfg.model.image_weights
                                                 if tower == cfg.model.image_tower else None})
        model = build_image_encoder(model_cfg, "none").to(device)
        ranked = rank_gallery(model, sets, device, cfg.eval.batch_size)
        rows.append({"tower": tower, "weights": model_cfg.image_weights or "random init",
                     **{k: ranked.metrics[k] for k in SHOWN}})
        print(f"baseline {tower}: score {ranked.metrics['score']:.1f}", file=sys.stderr)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / BASELINES_CSV, _csv_text(rows))
    _log_baselines(state, rows)
    return rows


def _log_baselines(state: dict, rows: list[dict[str, Any]]) -> None:
    client = tracking.client(state["tracking_uri"])
    exp_id = tracking.experiment_id(client, state["tracking_uri"], state["experiment"])
    parent = tracking.phase_run(client, exp_id, state["experiment"], f"{PROTOCOL}-baselines",
                                {"towers": ",".join(r["tower"] for r in rows)})
    for row in rows:
        child = tracking.trial_run(client, exp_id, parent, row["tower"], {"tower": row["tower"], "weights": row["weights"]})
        tracking.log_metrics(client, child, {k: row[k] for k in SHOWN}, step=0)
        tracking.end_run(client, child, "FINISHED")
    tracking.end_run(client, parent, "FINISHED")


def finish(root: Path, long_state: dict) -> dict[str, Any]:
    """The long run's best epoch, scored again and written as the competition's submission."""
    from ..models import build_image_encoder, load_trainable_state, resolve_device
    from ..tasks.query_gallery import load_retrieval_sets, rank_gallery
    from .space import Base

    best = read_json(root / "long" / BEST_JSON, "the long run's best.json", "run the sweep again")
    cfg = Base.from_json(long_state["base"]).config(best["config"], "the long run's best.json")
    device = resolve_device(cfg.train.device)
    model = build_image_encoder(cfg.model, cfg.image.head)
    load_trainable_state(model, _best_weights(best))
    ranked = rank_gallery(model.to(device), load_retrieval_sets(cfg), device, cfg.eval.batch_size)
    write_json(root / SUBMISSION_JSON, ranked.submission)
    final = {"tower": cfg.model.image_tower, "best_epoch": best["best_epoch"], "epochs": cfg.train.epochs,
             "config": best["config"],
             **{k: ranked.metrics[k] for k in SHOWN}}
    write_json(root / FINAL_JSON, final)
    return final


def _best_weights(best: dict) -> dict:
    return best_model_weights(best)


# ------------------------------------------------------------------------------ tables

def write_tables(root: Path, baselines: list[dict[str, Any]], final: dict[str, Any]) -> None:
    sweep = read_trials_csv(root / "sweep" / TRIALS_CSV)
    rows = [{"stage": "zero-shot", "tower": b["tower"], "lr": "", "weight_decay": "", "temperature": "",
             "epochs": 0, **{k: b[k] for k in SHOWN}} for b in baselines]
    for trial in sorted(sweep, key=lambda r: -(r.get("best_score") or 0)):
        config = trial["config"]
        rows.append({"stage": "sweep", "tower": final["tower"], "lr": config.get("optimizer.lr"),
                     "weight_decay": config.get("optimizer.weight_decay"),
                     "temperature": config.get("loss.temperature"), "epochs": trial.get("epochs"),
                     **{k: trial.get(f"best_{k}") for k in SHOWN}})
    config = final["config"]
    rows.append({"stage": f"long (best epoch {final['best_epoch']})", "tower": final["tower"],
                 "lr": config.get("optimizer.lr"), "weight_decay": config.get("optimizer.weight_decay"),
                 "temperature": config.get("loss.temperature"), "epochs": final["epochs"],
                 **{k: final[k] for k in SHOWN}})
    atomic_write_text(root / RESULTS_CSV, _csv_text(rows))
    atomic_write_text(root / RESULTS_MD, _markdown(rows))


def _csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
