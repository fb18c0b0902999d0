"""`clipsearch sweep classify`: bad input is one line and exit 2 before Ray starts; the space
file splits into one search per method; a tiny real sweep writes the table, the per-method
files the report draws, and the report; the test split reaches no trial."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch import cli
from clipsearch.errors import InputError
from clipsearch.tune.classify import comparison_markdown, comparison_rows, load_classify_spaces

from .helpers import mlflow_runs, run_cli, write_space

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
TINY = """base: quick
metric: objective
num_samples: 1
max_concurrent: 2
params:
  data.fraction: 0.05
  train.epochs: 2
  train.batch_size: 32
  image.flip: 0.0
methods:
  ce: {params: {scheduler.name: plateau, scheduler.patience: 1}}
  ntxent: {params: {scheduler.name: constant}}
  supcon: {params: {scheduler.name: constant, image.images_per_class: 4}}
"""


def invoke(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["clipsearch", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return info.value.code, capsys.readouterr()


def image_tree(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / "train" / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (12, 12), (i * 20, 0, 0)).save(root / "train" / name / f"{i}.png")
    return root


@pytest.mark.parametrize("case", ["single class", "empty class", "unknown method", "unknown method in file",
                                  "k x n larger than the data"])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(in_tmp, monkeypatch, capsys, case):
    args = ["sweep", "classify", "--space", "space.yaml", "--name", "bad"]
    text, expected = TINY, None
    if case == "single class":
        args += ["--set", f"data.source={image_tree(in_tmp / 'one', {'cat': 4})}"]
        expected = "at least 2"
    elif case == "empty class":
        root = image_tree(in_tmp / 'empty', {"cat": 4})
        (root / "train" / "dog").mkdir()
        args += ["--set", f"data.source={root}"]
        expected = "holds no images"
    elif case == "unknown method":
        args += ["--methods", "ce,simclr"]
        expected = "unknown method 'simclr'"
    elif case == "unknown method in file":
        text = TINY.replace("ntxent:", "byol:")
        expected = "methods.byol"
    else:
        args += ["--set", "train.batch_size=400", "--methods", "supcon"]
        expected = "larger than the"
    write_space(in_tmp, "space.yaml", text)
    code, out = invoke(monkeypatch, capsys, *args)
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and expected in lines[0] and "Traceback" not in out.err
    assert not (in_tmp / "results").exists()


@pytest.mark.parametrize("name", ["classify.yaml", "classify_quick.yaml"])
def test_shipped_spaces_give_one_search_per_method(name):
    spaces = load_classify_spaces(SPACES / name)
    assert list(spaces) == ["ce", "ntxent", "supcon"]
    for method, space in spaces.items():
        assert space.constants["loss.name"] == method and space.metric == "objective"
        assert space.asha["max_t"] == space.epochs()
    assert spaces["ce"].constants["scheduler.name"] == "plateau"


def test_method_params_override_common_ones_and_loss_name_is_the_methods(tmp_path):
    path = write_space(tmp_path, "s.yaml", TINY.replace("ce: {params: {", "ce: {params: {train.epochs: 3, "))
    spaces = load_classify_spaces(path)
    assert spaces["ce"].constants["train.epochs"] == 3 and spaces["ntxent"].constants["train.epochs"] == 2
    bad = write_space(tmp_path, "b.yaml", TINY.replace("ce: {params: {", "ce: {params: {loss.name: supcon, "))
    with pytest.raises(InputError, match="loss.name"):
        load_classify_spaces(bad)


def test_comparison_table_has_seed_002s_columns():
    finals = [{"method": "ce", "best_epoch": 3, "selected_on": "val_acc1", "val_score": 90.0, "probe_acc1": 91.0, "test_acc1": 92.5,
               "config": {"optimizer.name": "adamw", "scheduler.name": "plateau", "optimizer.lr": 5e-4,
                          "data.image_size": 256, "train.batch_size": 60, "train.epochs": 60}}]
    row = comparison_rows(finals)[0]
    assert row["method"] == "Supervised" and row["image size"] == "256x256" and row["criterion"] == "CrossEntropyLoss"
    assert row["test accuracy (%)"] == 92.5
    assert "| Supervised | adamw | plateau | 0.0005 | 256x256 | 60 | 60 |" in comparison_markdown([row])


@pytest.mark.slow
def test_tiny_sweep_writes_table_method_files_and_report(tmp_path):
    write_space(tmp_path, "space.yaml", TINY)
    out = run_cli("sweep", "classify", "--space", "space.yaml", "--name", "exp", cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [line.get("method") for line in lines[:3]] == ["ce", "ntxent", "supcon"]
    root = tmp_path / "results" / "exp" / "classify"
    with (root / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["Supervised", "SimCLR + linear probe", "SupCon + linear probe"]
    for method in ("ce", "ntxent", "supcon"):
        folder = root / method
        final = json.loads((folder / "final.json").read_text())
        with np.load(folder / "embeddings.npz") as npz:
            assert npz["embeddings"].shape[0] == len(npz["labels"]) == 1000
        matrix = np.array(json.loads((folder / "confusion_matrix.json").read_text())["matrix"])
        assert matrix.sum() == 1000 and 0 <= final["test_acc1"] <= 100
        trials = list(csv.DictReader((folder / "trials.csv").open()))
        # model selection saw train and val only: every trial trained on the 180 training images
        # (5% of each class's 350) and reported nothing measured on the test split
        assert all(t["train_images"] == "180" for t in trials)
        assert not [k for k in trials[0] if k.startswith(("test", "best_test"))]
    page = (root / "report.html").read_text()
    assert "Comparison" in page and page.count("<h3>t-SNE of the embeddings</h3>") == 3 and "Confusion matrix" in page
    parents = [r for r in mlflow_runs(tmp_path / "results", "exp") if "mlflow.parentRunId" not in r.data.tags]
    assert {r.info.run_name for r in parents} >= {"classify-ce", "classify-ntxent", "classify-supcon"}
