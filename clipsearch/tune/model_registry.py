"""The model a search ends with, in MLflow's model registry.

`register_best_model(phase_dir)` builds the model the phase's best trial describes (best.json's
config over the phase's base), loads the weights of its best epoch (best/model.pt of its
checkpoint, `runner.best_model_weights`), logs it with mlflow.pytorch.log_model into the
phase's parent run, and registers it as a new version of the registered model named after the
experiment; the version's tags hold the best epoch's metrics, the decided and resolved config,
the trial, the phase and the code's version, its description says the same in a sentence.

Whoever ends a search calls it (the CLI: a phase command run on its own, the protocol's last
phase, the supcon long run, each classify method): the whole model is some 60 MB on the quick
preset (best/model.pt leaves out the frozen text tower, the logged model cannot), too much to
log for every phase. It never fails the search: a store that refuses it costs one line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .. import tracking
from ..provenance import code_version
from ..results import BEST_JSON, PHASE_JSON, read_json
from .runner import best_model_weights
from .space import Base

#: MLflow's limit on a model version tag's value
_MAX_TAG_VALUE = 100_000


def register_best_model(phase_dir: Path) -> str | None:
    """Log and register the phase's best model; its version, or None when nothing was logged
    (no best trial, no MLflow run, or a store that refused it: then one line on stderr)."""
    phase_dir = Path(phase_dir)
    state = read_json(phase_dir / PHASE_JSON, "phase.json", "run the phase first")
    best_file = phase_dir / BEST_JSON
    if not best_file.is_file() or not state.get("parent_run_id"):
        return None
    best = read_json(best_file, "best.json", "run the phase again")
    name, phase = state["experiment"], state["phase"]
    said = f"{phase}: best model (trial {best['trial_id']}, epoch {best['best_epoch']})"
    try:
        version = tracking.registered_version(state["tracking_uri"], name, state["parent_run_id"], _identity(best))
        if version is not None:
            print(f"{said} already registered in MLflow as {name!r} version {version}", file=sys.stderr)
            return version
        version = tracking.log_registered_model(state["tracking_uri"], state["parent_run_id"], best_model(state, best),
                                                name, version_tags(best), description(best, state))
    except Exception as exc:  # noqa: BLE001 - the search's results stand without the registry
        tracking.not_logged(f"{phase}'s best model (registered model {name!r}, run {state['parent_run_id']})", exc)
        return None
    print(f"{said} registered in MLflow as {name!r} version {version}", file=sys.stderr)
    return version


def _identity(best: dict) -> dict[str, str]:
    """The version tags that say which model a version holds: the phase's trial and its epoch."""
    tags = version_tags(best)
    return {k: tags[k] for k in ("clipsearch.phase", "clipsearch.trial_id", "clipsearch.best_epoch")}


def best_model(state: dict, best: dict):
    """The best trial's model at its best epoch, in eval mode."""
    from ..models import build_dual_encoder, build_image_encoder, load_trainable_state
    from ..tasks import is_image_task

    cfg = Base.from_json(state["base"]).config(best["config"], "best.json")
    weights = best_model_weights(best)
    if is_image_task(cfg):
        classes = weights["classifier.weight"].shape[0] if "classifier.weight" in weights else None  # ce's head
        model = build_image_encoder(cfg.model, cfg.image.head, classes)
    else:
        model = build_dual_encoder(cfg.model, cfg.data.max_text_length)[0]
    load_trainable_state(model, weights)
    return model.eval()


def version_tags(best: dict) -> dict[str, str]:
    """The best epoch's metrics (metric.NAME), the keys the search decided (config.KEY), the
    whole resolved config as JSON, where it came from, and the code's version."""
    metrics = {f"metric.{k}": f"{v:.6g}" for k, v in best["best_metrics"].items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
               and not k.startswith("best_")}  # train()'s running best: the epoch's own values say it
    config = {f"config.{k}": str(v) for k, v in best["decided"].items()}
    resolved = json.dumps(best.get("resolved_config") or best["config"], sort_keys=True, default=str)
    return {**metrics, **config, "clipsearch.resolved_config": resolved[:_MAX_TAG_VALUE],
            "clipsearch.phase": best["phase"], "clipsearch.trial_id": best["trial_id"],
            "clipsearch.best_epoch": str(best["best_epoch"]), **code_version()}


def description(best: dict, state: dict) -> str:
    """'phase3 of experiment demo: trial 3f_00002 at epoch 6, objective 39.5 (tr1 ..., ...), from
    MLflow run RUN; decided: loss.name=isogclr, ...'."""
    metric = best["metric"]
    shown = ", ".join(f"{k} {v:.4g}" for k, v in best["best_metrics"].items()
                      if k in ("tr1", "ir1", "acc1", "knn_acc1", "val_acc1", "score") and isinstance(v, (int, float)))
    decided = ", ".join(f"{k}={v}" for k, v in sorted(best["decided"].items()))
    return (f"{best['phase']} of experiment {best['experiment']!r}: trial {best['trial_id']} at epoch "
            f"{best['best_epoch']}, {metric} {best['score']:.4g}" + (f" ({shown})" if shown else "")
            + f", from MLflow run {state['parent_run_id']}" + (f"; decided: {decided}" if decided else ""))
