"""Which task a run is, and what a loss needs of it, come from the loss's registry entry; the
metrics a space may maximise are those the tasks' evaluators declare."""

import pytest
import torch

from clipsearch.config import load_config
from clipsearch.errors import InputError
from clipsearch.losses import list_losses, loss_info
from clipsearch.tasks import TASKS, image, image_text, is_image_task, reported_metrics, task_for


def cfg(loss, *more):
    return load_config(quick=True, overrides=[f"loss.name={loss}", *more])


@pytest.mark.parametrize("loss", list_losses())
def test_the_loss_entry_names_the_task(loss):
    expected = "image_text" if loss_info(loss).cls.needs_text else "image"
    assert task_for(cfg(loss)).name == loss_info(loss).task == expected
    assert is_image_task(cfg(loss)) == (expected == "image")


def test_what_an_image_loss_needs_is_data_on_its_entry():
    assert image.sampler_of(cfg("supcon")) == "balanced" and image.sampler_of(cfg("ntxent")) == "shuffle"
    assert image.views_of(cfg("ce")) == 1 and image.views_of(cfg("supcon")) == 2
    assert image.views_of(cfg("ce", "image.views=3")) == 3  # the config's own value wins
    assert loss_info("ce").classifier and not loss_info("supcon").classifier


def test_a_loss_given_fewer_views_than_it_contrasts_is_refused_at_config_time():
    with pytest.raises(InputError) as info:
        cfg("ntxent", "image.views=1")
    assert "image.views" in str(info.value) and "2 views" in str(info.value)


def test_every_task_is_registered_and_every_evaluator_declares_its_metrics():
    assert set(TASKS) == {"image_text", "image"}
    metrics = reported_metrics()
    assert set(image_text.METRICS) <= set(metrics)
    assert {"knn_acc1", "val_acc1", "score", "hit1", "mapr"} <= set(metrics)  # knn and query_gallery's


def test_the_image_text_evaluator_reports_exactly_its_declared_metrics_and_the_chance_level():
    setup = image_text.setup(cfg("clip", "data.fraction=0.05"), torch.device("cpu"))
    out = setup.evaluator(setup.model, torch.autocast("cpu", enabled=False))
    assert set(out) == set(image_text.METRICS) | {"chance_objective"}


def test_a_space_may_maximise_a_query_gallery_metric(tmp_path):
    from clipsearch.tune.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text("base: quick\nmetric: score\nnum_samples: 1\nparams:\n  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n")
    assert load_space(path, "phase1").metric == "score"
