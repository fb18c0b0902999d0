"""`clipsearch sweep supcon`: zero-shot baselines, a grid of one-epoch runs, the best cell run
longer, the tables, the submission and MLflow; and the bad inputs it refuses before Ray starts."""

import json

import numpy as np
import pytest
from PIL import Image

from clipsearch.results import read_trials_csv

from .helpers import mlflow_runs, run_cli, write_space

SPACE = """base: quick
metric: objective
max_concurrent: 2
baselines: [timm:test_efficientnet]
long_epochs: 2
params:
  loss.name: supcon
  image.evaluator: query_gallery
  image.head: none
  image.images_per_class: 8
  model.image_tower: timm:test_resnet
  data.fraction: 0.5
  train.batch_size: 64
  train.epochs: 1
  optimizer.name: adam
  scheduler.name: constant
  optimizer.lr: {grid: [3.0e-3, 1.0e-4]}
  loss.temperature: {grid: [0.2]}
"""


@pytest.mark.slow
def test_sweep_ranks_baselines_runs_the_grid_then_the_best_cell_longer(tmp_path):
    write_space(tmp_path, "space.yaml", SPACE)
    out = run_cli("sweep", "supcon", "--space", "space.yaml", "--name", "s", cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    root = tmp_path / "results" / "s" / "supcon"

    baselines = {row["tower"]: row for row in _csv(root / "baselines.csv")}
    assert set(baselines) == {"timm:test_efficientnet", "timm:test_resnet"}  # the tuned tower is always added
    sweep = read_trials_csv(root / "sweep" / "trials.csv")
    assert sorted(r["config"]["optimizer.lr"] for r in sweep) == [1.0e-4, 3.0e-3] and all(r["epochs"] == 1 for r in sweep)
    best_cell = max(sweep, key=lambda r: r["best_score"])
    (long_trial,) = read_trials_csv(root / "long" / "trials.csv")
    assert long_trial["epochs"] == 2 and long_trial["config"]["optimizer.lr"] == best_cell["config"]["optimizer.lr"]

    # fine-tuning beats the same tower untouched
    final = json.loads((root / "final.json").read_text())
    assert final["score"] > float(baselines["timm:test_resnet"]["score"]) + 100
    assert summary["final"]["score"] == pytest.approx(final["score"])
    submission = json.loads((root / "submission.json").read_text())
    assert len(submission) == 1797 and all(len(top) == 10 for top in submission.values())
    rows = _csv(root / "results.csv")
    assert [r["stage"] for r in rows] == ["zero-shot", "zero-shot", "sweep", "sweep", f"long (best epoch {final['best_epoch']})"]

    runs = mlflow_runs(tmp_path / "results", "s")
    parents = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {"supcon-baselines", "supcon-sweep", "supcon-long"}
    children = {name: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
                for name, parent in parents.items()}
    assert [len(children[n]) for n in ("supcon-baselines", "supcon-sweep", "supcon-long")] == [2, 2, 1]
    assert all(r.info.status == "FINISHED" for r in runs)


def _csv(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ bad input

def save(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 12, 3), value, dtype=np.uint8)).save(path)


def folders(tmp_path, flat_query=False, empty_gallery=False):
    for c in range(3):
        for i in range(8):
            save(tmp_path / "data" / "train" / f"c{c}" / f"{i}.png", 40 * c + i)
    save(tmp_path / "data" / "query" / ("q.png" if flat_query else "c0/q.png"))
    (tmp_path / "data" / "gallery").mkdir(parents=True, exist_ok=True)
    if not empty_gallery:
        save(tmp_path / "data" / "gallery" / "c0" / "g.png")


def sweep(tmp_path, *extra):
    write_space(tmp_path, "space.yaml", SPACE)
    sets = ["--set", "data.source=data/train", "--set", "retrieval.query=data/query",
            "--set", "retrieval.gallery=data/gallery", "--set", "train.batch_size=4", "--set", "image.images_per_class=2",
            "--set", "data.fraction=1.0"]
    return run_cli("sweep", "supcon", "--space", "space.yaml", "--name", "bad", *sets, *extra, cwd=tmp_path)


@pytest.mark.parametrize("case, named", [
    ("flat query without labels", "retrieval.query"),
    ("empty gallery", "retrieval.gallery"),
    ("k x n larger than the data", "train.batch_size"),
])
def test_bad_input_exits_2_with_one_line_before_anything_starts(tmp_path, case, named):
    folders(tmp_path, flat_query=case.startswith("flat"), empty_gallery=case == "empty gallery")
    extra = ["--set", "train.batch_size=100"] if case.startswith("k x n") else []
    out = sweep(tmp_path, *extra)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "results").exists()  # nothing written


def test_a_space_that_is_not_supcon_is_refused(tmp_path):
    write_space(tmp_path, "space.yaml", SPACE.replace("loss.name: supcon", "loss.name: ntxent"))
    out = run_cli("sweep", "supcon", "--space", "space.yaml", "--name", "x", cwd=tmp_path)
    assert out.returncode == 2 and "loss.name: supcon" in out.stderr


def test_resume_of_a_sweep_that_does_not_exist_is_refused(tmp_path):
    out = run_cli("sweep", "supcon", "--quick", "--name", "nothing", "--resume", cwd=tmp_path)
    assert out.returncode == 2 and "no supcon sweep" in out.stderr


def test_a_class_with_one_image_is_kept_and_the_sampler_says_so(tmp_path):
    folders(tmp_path, empty_gallery=True)  # the run then stops at the gallery, checked after the sampler
    save(tmp_path / "data" / "train" / "lonely" / "0.png", 250)
    out = sweep(tmp_path)
    assert out.returncode == 2 and "retrieval.gallery" in out.stderr
    assert "fewer than n = 2" in out.stderr and "with replacement" in out.stderr, out.stderr
