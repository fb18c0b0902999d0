"""The tasks train() runs, one module each behind one small protocol (`base.Task`):

- image_text: a dual encoder on image-caption pairs (CLIP, SogCLR, iSogCLR, ...), evaluated by
  retrieval and zero-shot classification;
- image: an image encoder on labelled images (SupCon, SimCLR's NT-Xent, CE), evaluated by kNN
  or its classifier;
- query_gallery: the image task's cross-domain retrieval evaluator and submission (seed 000).

Which task a run is comes from its loss's registry entry (`LossInfo.task`), never from its name.
The loop (clipsearch.train) imports tasks; tasks never import the loop or the config module.
"""

from __future__ import annotations

from ..losses import loss_info
from . import image, image_text, query_gallery
from .base import Setup, Task

image.register_evaluator("query_gallery", query_gallery.query_gallery_evaluator, query_gallery.METRICS)

TASKS: dict[str, Task] = {task.name: task for task in (image_text.TASK, image.TASK)}


def task_for(cfg) -> Task:
    """The task cfg's loss trains (an unknown loss name raises InputError from the registry)."""
    return TASKS[loss_info(cfg.loss.name).task]


def is_image_task(cfg) -> bool:
    return task_for(cfg).name == image.TASK.name


def check_config(cfg) -> None:
    """What a config alone can get wrong about its task, before any data loads."""
    task_for(cfg).check(cfg)


def reported_metrics() -> tuple[str, ...]:
    """Every metric some task's evaluator reports: what a search space may maximise."""
    return tuple(dict.fromkeys(m for task in TASKS.values() for m in task.metrics()))


__all__ = ["TASKS", "Setup", "Task", "check_config", "is_image_task", "reported_metrics", "task_for"]
