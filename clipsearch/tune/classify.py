"""The classification protocol (protocols.md C, seed 002): supervised vs SimCLR vs SupCon.

Each method is a search of its own (a `classify` PhaseKind plan run by `runner.execute`: Optuna
TPE, or the file's `sampler:` (one block for every method, the start-up trials sized to each
method's num_samples), ASHA on the kNN accuracy of the validation split, MLflow parent/child
runs, trials.csv and best.json under results/EXP/classify/METHOD/). The space file holds the
params every method shares and, under `methods:`, each method's own:

    base: quick
    metric: objective                                   # knn_acc1; ce: val_acc1
    asha: {grace_period: 1, reduction_factor: 2}
    params: {train.epochs: 4, data.image_size: 28}       # every method
    methods:
      ce:     {num_samples: 3, params: {scheduler.name: plateau, optimizer.lr: {loguniform: [1.0e-3, 1.0e-2]}}}
      ntxent: {num_samples: 3, params: {loss.temperature: {loguniform: [0.05, 0.5]}}}
      supcon: {num_samples: 3, params: {...}}

After the searches, the best trial of each method (by the validation metric; the test split is
not read before this point) is scored on the held-out test split: a linear probe fitted on the
training split's frozen embeddings, and for ce its own classifier too. Written per method:
final.json, embeddings.npz (a 1,000-point subsample of the test embeddings, for t-SNE) and
confusion_matrix.json; for the protocol: comparison.csv and comparison.md (seed 002's table).
The protocol's report.html is the caller's (the CLI's `sweep classify` draws it from these
files with clipsearch.report.classify): tune never imports report.
"""

from __future__ import annotations

import csv
import io
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..results import (COMPARISON_CSV, COMPARISON_MD, CONFUSION_JSON, EMBEDDINGS_NPZ, atomic_write,
                       atomic_write_text, write_json)
from .phases import Options, check_options, new_plan, space_overrides, startup_warning_of
from .runner import Outcome, Plan, best_model_weights, execute
from .space import SearchSpace, default_space_path, space_from_doc

PROTOCOL = "classify"
#: method -> (what the table calls it, its criterion)
METHODS = {"ce": ("Supervised", "CrossEntropyLoss"), "ntxent": ("SimCLR + linear probe", "NT-Xent (InfoNCE)"),
           "supcon": ("SupCon + linear probe", "SupCon")}
_METHOD_KEYS = ("num_samples", "params", "points")
FINAL_JSON = "final.json"
TSNE_POINTS = 1000


# ------------------------------------------------------------------------------ space

def load_classify_spaces(path: Path, overrides: dict[str, Any] | None = None,
                         methods: list[str] | None = None) -> dict[str, SearchSpace]:
    """method -> its validated space (the common params, then the method's, loss.name = method)."""
    from ..config import read_yaml

    doc, where = read_yaml(path), str(path)
    blocks = doc.get("methods")
    if not isinstance(blocks, dict) or not blocks:
        raise InputError("no methods", where=f"{where}: methods",
                         fix=f"list the methods to compare under `methods:` ({', '.join(METHODS)})")
    for method in blocks:
        check_method(method, f"{where}: methods.{method}")
    chosen = methods or list(blocks)
    for method in chosen:
        check_method(method, "--methods")
        if method not in blocks:
            raise InputError(f"method {method!r} has no block in the space file", where="--methods",
                             fix=f"choose among {', '.join(blocks)} or add methods.{method} to {where}")
    common = {k: v for k, v in doc.items() if k != "methods"}
    return {m: _method_space(common, blocks[m], m, Path(path), where, overrides) for m in chosen}


def check_method(method: Any, where: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}", where=where, fix=f"use one of: {', '.join(METHODS)}")


def _method_space(common: dict, block: Any, method: str, path: Path, where: str,
                  overrides: dict[str, Any] | None) -> SearchSpace:
    at = f"{where}: methods.{method}"
    block = block or {}
    if not isinstance(block, dict) or set(block) - set(_METHOD_KEYS):
        raise InputError("a method block takes num_samples, params and points", where=at,
                         fix="write `ce: {num_samples: 3, params: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}}}`")
    params = {**(common.get("params") or {}), **(block.get("params") or {})}
    if "loss.name" in params:
        raise InputError("loss.name is the method's", where=f"{at}: params.loss.name", fix="remove it")
    doc = {**common, **{k: v for k, v in block.items() if k != "params"},
           "params": {"loss.name": method, **params}}
    return space_from_doc(doc, PROTOCOL, path, at, overrides)


# ------------------------------------------------------------------------------ prepare and run

@dataclass
class MethodResult:
    method: str
    outcome: Outcome
    final: dict[str, Any]


def classify_dir(opts: Options) -> Path:
    return (opts.results / opts.name / PROTOCOL).resolve()


def prepare_classify(opts: Options, methods: list[str] | None = None) -> list[Plan]:
    """Every method's plan, every check done; nothing written, no Ray."""
    check_options(opts)
    if opts.resume:
        raise InputError("sweep classify cannot be resumed yet", where="--resume",
                         fix="start it again under another --name")
    root = classify_dir(opts)
    if root.exists():
        raise InputError(f"classify of experiment {opts.name!r} exists already", where=str(root),
                         fix="choose another --name")
    path = opts.space or default_space_path(PROTOCOL, opts.quick, opts.spaces_dir)
    spaces = load_classify_spaces(path, space_overrides(opts), methods)
    plans = [_plan(method, space, opts, root / method) for method, space in spaces.items()]
    for message in filter(None, (m for plan in plans for m in [*plan.notes, startup_warning_of(plan.state)])):
        print(message, file=sys.stderr)  # after every method's checks: a bad input stays one line
    return plans


def _plan(method: str, space: SearchSpace, opts: Options, method_dir: Path) -> Plan:
    plan = new_plan(f"{PROTOCOL}-{method}", space, opts, method_dir, extra={"method": method})
    _check_data(space)
    return plan


def _check_data(space: SearchSpace) -> None:
    """The data set is read once here, so that a bad ImageFolder, or batches it cannot give (at
    any batch size or k x n the space may draw), fail before any trial starts."""
    from ..data.labelled import load_labelled_splits
    from ..tasks.image import check_batches

    cfg = space.base.config(space.constants, space.path)
    splits = load_labelled_splits(cfg.data, cfg.image)
    for values in itertools.product(*(_candidates(space, k) for k in BATCH_KEYS)):
        drawn = {k: v for k, v in zip(BATCH_KEYS, values) if v is not None}
        check_batches(space.base.config({**space.constants, **drawn}, space.path), splits)


BATCH_KEYS = ("train.batch_size", "image.images_per_class")


def _candidates(space: SearchSpace, key: str) -> list:
    """The values of `key` worth checking: a constant, a choice's values, an int range's bounds."""
    param = next((p for p in space.params if p.key == key), None)
    if param is None:
        return [space.constants[key]] if key in space.constants else [None]
    return list(param.values)


def run_classify(opts: Options, methods: list[str] | None = None) -> list[MethodResult]:
    """The searches, then each best model scored on the test split, then the table (the
    report of each method's search comes from opts.after_phase; the protocol's, from the caller)."""
    from .cluster import ray_session
    from .driver_lock import experiment_lock

    check_options(opts)  # --name is a plain folder name before its lock file is looked for
    with experiment_lock(opts.results / opts.name) as lock:  # one driver per experiment
        plans = prepare_classify(opts, methods)
        lock.take()
        results = []
        with ray_session(opts.address):
            for plan in plans:
                outcome = execute(plan)
                results.append(MethodResult(plan.state["method"], outcome, score_best(plan, outcome.best)))
        write_comparison(classify_dir(opts), results)
    return results


# ------------------------------------------------------------------------------ final scores

def score_best(plan: Plan, best: dict) -> dict[str, Any]:
    """The best trial's best-epoch weights, scored on the test split; its files written."""
    from ..tasks.image import final_scores
    from .space import Base

    started = time.time()
    cfg = Base.from_json(plan.state["base"]).config(best["config"], "best trial config")
    scores = final_scores(cfg, best_model_weights(best))
    write_method_files(plan.phase_dir, scores, seed=cfg.seed)
    final = {"method": plan.state["method"], "trial_id": best["trial_id"], "best_epoch": best["best_epoch"],
             "selected_on": _selected_on(plan.state["method"], plan.state["metric"]), "val_score": best["score"],
             "test_acc1": _round(scores.test_acc1),
             "probe_acc1": _round(scores.probe_acc1), "head_acc1": _round(scores.head_acc1),
             "config": best["resolved_config"], "seconds": round(time.time() - started, 1)}
    write_json(plan.phase_dir / FINAL_JSON, final)
    print(f"{plan.phase}: test accuracy {scores.test_acc1:.2f}% (probe {scores.probe_acc1:.2f}%)", file=sys.stderr)
    return final


def _selected_on(method: str, metric: str) -> str:
    if metric != "objective":
        return metric
    return "val_acc1" if method == "ce" else "knn_acc1"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def write_method_files(folder: Path, scores, seed: int = 0) -> None:
    """embeddings.npz (a seeded subsample of the test embeddings) and confusion_matrix.json: what
    the report draws its t-SNE and confusion matrix from."""
    n = len(scores.test_labels)
    keep = np.sort(np.random.default_rng(seed).choice(n, min(n, TSNE_POINTS), replace=False))
    arrays = {"embeddings": scores.test_embeddings[keep].astype(np.float32), "labels": scores.test_labels[keep],
              "class_names": np.array(scores.class_names)}
    atomic_write(folder / EMBEDDINGS_NPZ, lambda file: np.savez_compressed(file, **arrays))
    write_json(folder / CONFUSION_JSON, {"class_names": scores.class_names, "matrix": scores.confusion().tolist(),
                                    "split": "test"})


# ------------------------------------------------------------------------------ the table

COLUMNS = ("method", "optimizer", "scheduler", "lr", "image size", "batch", "epochs", "best epoch", "criterion",
           "selected on", "val (%)", "probe test acc (%)", "test accuracy (%)")


def comparison_rows(finals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seed 002's comparison table, one row per method, from each method's final.json."""
    rows = []
    for f in finals:
        cfg = f["config"]
        size = cfg.get("data.image_size")
        rows.append(dict(zip(COLUMNS, (
            METHODS[f["method"]][0], cfg.get("optimizer.name"), cfg.get("scheduler.name"), cfg.get("optimizer.lr"),
            f"{size}x{size}", cfg.get("train.batch_size"), cfg.get("train.epochs"), f.get("best_epoch"),
            METHODS[f["method"]][1], f.get("selected_on"), _round(f.get("val_score")), f["probe_acc1"],
            f["test_acc1"]))))
    return rows


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_comparison(root: Path, results: list[MethodResult]) -> Path:
    """comparison.csv and comparison.md of the protocol; returns the .md."""
    rows = comparison_rows([r.final for r in results])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / COMPARISON_CSV, buffer.getvalue())
    atomic_write_text(root / COMPARISON_MD, comparison_markdown(rows))
    return root / COMPARISON_MD
