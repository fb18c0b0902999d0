"""The function trainable: one Tune trial is one `clipsearch.train.train` run.

The trial's config holds flat dotted keys (phase 2 nests its optimizer and loss cells under
"optimizer" and "loss"; flattening gives the same keys), set over the phase's base config.
Each epoch's metrics go to `tune.report` with the run folder as the checkpoint: the folder holds
`checkpoint/state.pt` (to resume) and `best/model.pt` (the best epoch's weights, which Tune
then keeps with the trial; once the trial is finished, the driver drops the state and keeps
that). A trial that failed, or whose phase was interrupted, starts again from its latest
checkpoint: the folder is restored, and train() continues from it. A checkpoint Population Based
Training handed over from another trial ran other optimizer settings: this trial's are put into
its optimizer and schedule state first (checkpoints.adopt_optimizer_settings).

After each epoch, before reporting it, a trial calls the epoch hook CLIPSEARCH_TRIAL_HOOK names
(clipsearch.tune.trial_hook), if any: how tests inject faults; clipsearch itself sets none.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune

from ..checkpoints import adopt_optimizer_settings
from ..config import flatten
from ..results import CHECKPOINT_FILE, STATE_DIR, RunFolder
from ..train import train
from .space import Base
from .trial_hook import load_epoch_hook

RUN_DIR = "run"
NODE_ID = "node_id"  # reported with every epoch's metrics: bookkeeping, not a result


def run_trial(config: dict[str, Any], base: Base) -> None:
    # Tune logs every persisted checkpoint at INFO: one line per epoch per trial on the driver
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    values = flatten(config)
    cfg = base.config(values, source="trial config")
    # the trial's working directory (Tune makes it the cwd): local to the node running it
    run_dir = Path.cwd() / RUN_DIR
    epoch_hook = load_epoch_hook()  # None unless a test installed one
    # on a cluster, which node ran the trial (nodes of one machine share an IP: node_ip is not enough)
    placement = {NODE_ID: ray.get_runtime_context().get_node_id()}

    def report(metrics: dict, _checkpoint_dir: Path | None) -> None:
        if epoch_hook is not None:
            epoch_hook(values, metrics["epoch"])
        # the whole run folder, not just checkpoint/: best/model.pt must travel with the trial
        tune.report({**metrics, **placement}, checkpoint=tune.Checkpoint.from_directory(str(run_dir)))

    try:
        restored = _restore_latest(run_dir)
        if restored is FINISHED:
            return  # the driver had pruned it as finished before it died: nothing left to run
        if restored is not None and _optimizer_changed(run_dir, cfg):
            # PBT's exploit: another trial's checkpoint, this trial's (mutated) hyperparameters
            adopt_optimizer_settings(restored, cfg.optimizer)
        train(cfg, report=report, run_dir=run_dir, resume_from=restored)
    finally:
        # Tune holds every epoch's copy; the local folder (a model, its optimizer state) would
        # otherwise stay behind in Ray's session directory for every trial
        shutil.rmtree(run_dir, ignore_errors=True)


FINISHED = object()


def _optimizer_changed(run_dir: Path, cfg) -> bool:
    """Whether the restored run folder's config (config.yaml) ran other optimizer settings than
    the trial's: a checkpoint PBT handed over from a better trial."""
    saved = RunFolder(run_dir).config
    if not saved.is_file():
        return False
    ran = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("optimizer")
    return ran != cfg.optimizer.model_dump()


def _restore_latest(run_dir: Path) -> Path | None | object:
    """Put the trial's latest checkpoint into `run_dir`: the checkpoint to resume from, None
    for a fresh trial, or FINISHED when the checkpoint holds no state to resume (see
    callbacks.PruneFinished)."""
    checkpoint = tune.get_checkpoint()
    shutil.rmtree(run_dir, ignore_errors=True)  # a failed attempt's files may be newer than its checkpoint
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        shutil.copytree(folder, run_dir)
    state = run_dir / STATE_DIR
    return state if (state / CHECKPOINT_FILE).is_file() else FINISHED
