"""The function trainable: one Tune trial is one `clipsearch.train.train` run.

The trial's config holds flat dotted keys (phase 2 nests its optimizer and loss cells under
"optimizer" and "loss"; flattening gives the same keys), set over the phase's base config.
Each epoch's metrics go to `tune.report` with the run folder as the checkpoint: the folder holds
`checkpoint/state.pt` (to resume) and `best/model.pt` (the best epoch's weights, which Tune
then keeps with the trial; once the trial is finished, the driver drops the state and keeps
that). A trial that failed, or whose phase was interrupted, starts again from its latest
checkpoint: the folder is restored, and train() continues from it.

Test-only fault injection: CLIPSEARCH_TEST_FAULT="KEY=VALUE@EPOCH" (several rules joined by
';') makes every trial whose config has KEY == VALUE (VALUE * matches any) raise InjectedFault
once it has trained past EPOCH, before reporting that epoch: every attempt fails the same way
after resuming from the checkpoint of EPOCH. The variable reaches trials through the
environment the local Ray cluster inherits from the driver; nothing in clipsearch sets it.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune

from ..config import flatten
from ..results import CHECKPOINT_FILE, STATE_DIR
from ..train import train
from .space import Base

FAULT_ENV = "CLIPSEARCH_TEST_FAULT"
RUN_DIR = "run"
NODE_ID = "node_id"  # reported with every epoch's metrics: bookkeeping, not a result


class InjectedFault(RuntimeError):
    """Raised by the test-only fault hook (CLIPSEARCH_TEST_FAULT)."""


def run_trial(config: dict[str, Any], base: Base) -> None:
    # Tune logs every persisted checkpoint at INFO: one line per epoch per trial on the driver
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    values = flatten(config)
    cfg = base.config(values, source="trial config")
    # the trial's working directory (Tune makes it the cwd): local to the node running it
    run_dir = Path.cwd() / RUN_DIR
    fault = _fault_hook(values)
    # on a cluster, which node ran the trial (nodes of one machine share an IP: node_ip is not enough)
    placement = {NODE_ID: ray.get_runtime_context().get_node_id()}

    def report(metrics: dict, _checkpoint_dir: Path | None) -> None:
        fault(metrics["epoch"])
        # the whole run folder, not just checkpoint/: best/model.pt must travel with the trial
        tune.report({**metrics, **placement}, checkpoint=tune.Checkpoint.from_directory(str(run_dir)))

    try:
        restored = _restore_latest(run_dir)
        if restored is FINISHED:
            return  # the driver had pruned it as finished before it died: nothing left to run
        train(cfg, report=report, run_dir=run_dir, resume_from=restored)
    finally:
        # Tune holds every epoch's copy; the local folder (a model, its optimizer state) would
        # otherwise stay behind in Ray's session directory for every trial
        shutil.rmtree(run_dir, ignore_errors=True)


FINISHED = object()


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


def _fault_hook(values: dict[str, Any]) -> Callable[[int], None]:
    """The test-only fault of this trial: the first rule of CLIPSEARCH_TEST_FAULT
    ("KEY=VALUE@EPOCH", several joined by ';') that its config matches, or none."""
    for rule in filter(None, os.environ.get(FAULT_ENV, "").split(";")):
        condition, _, after = rule.rpartition("@")
        key, _, wanted = condition.partition("=")
        if wanted == "*" or str(values.get(key)) == wanted:
            return lambda epoch, rule=rule, after=int(after): _maybe_fail(epoch, after, rule)
    return lambda epoch: None


def _maybe_fail(epoch: int, after: int, rule: str) -> None:
    if epoch > after:
        raise InjectedFault(f"{FAULT_ENV} rule {rule!r}: injected failure at epoch {epoch}")
