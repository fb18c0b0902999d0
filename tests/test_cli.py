"""The console script as a user meets it: exit codes, one-line errors, nothing written on bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "clipsearch.cli", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


def test_help_lists_the_commands(tmp_path):
    out = run("--help", cwd=tmp_path)
    assert out.returncode == 0 and "train" in out.stdout and "bench" in out.stdout


def test_train_quick_prints_one_json_line_of_metrics(tmp_path):
    out = run("train", "--quick", "--set", "train.epochs=1", "--set", "data.fraction=0.1", "--no-progress",
              "--output", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"tr1", "ir1", "acc1", "objective", "best_epoch"} <= set(metrics)
    assert (tmp_path / "run" / "checkpoint" / "state.pt").is_file()


@pytest.mark.parametrize("args, named", [
    (["--set", "train.nope=1"], "train.nope"),
    (["--set", "optimizer.lr=fast"], "optimizer.lr"),
    (["--set", "model.image_tower=timm:resnet5000"], "resnet5000"),
    (["--set", "model.text_tower=hf:distilbert-base-uncased"], "distilbert-base-uncased"),
    (["--set", "data.source=missing.csv"], "missing.csv"),
    (["--set", "loss.name=nope"], "loss.name"),
    (["--config", "missing.yaml"], "missing.yaml"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, named):
    out = run("train", "--quick", "--no-progress", "--output", str(tmp_path / "run"), *args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()
