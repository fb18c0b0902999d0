"""Helpers for the Ray Tune tests: the console script in a subprocess, MLflow runs, space files."""

import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_cli(*args, cwd: Path, env: dict | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipsearch.cli", *map(str, args)], cwd=cwd,
                          env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)


def mlflow_runs(results: Path, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def write_space(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def space_error_line(path: Path, phase: str) -> str:
    """The InputError loading the space file at `path` raises, as the one line the user reads
    (it must say a fix and fit on one line)."""
    import pytest

    from clipsearch.errors import InputError
    from clipsearch.tune.space import load_space

    with pytest.raises(InputError) as info:
        load_space(path, phase)
    line = str(info.value)
    assert "fix:" in line and "\n" not in line
    return line
