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


@pytest.mark.parametrize("command", [["phase1"], ["sweep", "supcon"]])
def test_a_commands_help_wraps_each_paragraph_at_the_terminals_width(tmp_path, command):
    # typer's rich help kept the docstring's line breaks after the first paragraph and wrapped
    # them as they were: lines of the source's width (under 100 characters) on a wider terminal
    out = subprocess.run([sys.executable, "-m", "clipsearch.cli", *command, "--help"], cwd=tmp_path,
                         env={**ENV, "COLUMNS": "140"}, capture_output=True, text=True, timeout=60)
    prose = out.stdout[:out.stdout.index("╭─ Options")].split("Usage:")[1].splitlines()[2:]
    paragraphs = "\n".join(line.strip() for line in prose).strip().split("\n\n")
    assert out.returncode == 0 and len(paragraphs) >= 2
    for paragraph in paragraphs:
        lines = paragraph.splitlines()
        assert all(len(line) > 110 for line in lines[:-1]), paragraph


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


def run_as_clipsearch(*args, cwd, env=None):
    """main() under the console script's name (click names the completion variable after it);
    stderr's last line says which of torch and ray the command imported."""
    code = ("import sys\nfrom clipsearch.cli import main\nsys.argv = ['clipsearch', *sys.argv[1:]]\ntry:\n    main()\n"
            "finally:\n    print('imported:', *sorted(m for m in ('ray', 'torch') if m in sys.modules), file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=600)


def test_version_prints_the_installed_versions_without_importing_torch_or_ray(tmp_path):
    from importlib.metadata import version

    out = run_as_clipsearch("--version", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"clipsearch {version('clipsearch')} (torch {version('torch')}, ray {version('ray')})\n"
    assert out.stderr.strip().splitlines()[-1] == "imported:"


def test_shell_completion_completes_commands_and_installs_into_the_shells_rc(tmp_path):
    out = run_as_clipsearch(cwd=tmp_path, env={"_CLIPSEARCH_COMPLETE": "complete_bash", "COMP_WORDS": "clipsearch ph",
                                               "COMP_CWORD": "1"})
    assert out.returncode == 0 and out.stdout.split() == ["phase1", "phase2", "phase3"], out.stderr
    out = run_as_clipsearch("--install-completion", "bash", cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    script = tmp_path / ".bash_completions" / "clipsearch.sh"
    assert "_CLIPSEARCH_COMPLETE=complete_bash" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()


def test_top_level_help_lists_version_and_completion(tmp_path):
    out = run("--help", cwd=tmp_path)
    assert out.returncode == 0
    for option in ("--version", "--install-completion", "--show-completion"):
        assert option in out.stdout
