"""The experiment configs of the three source reports (experiments/*.yaml) load through the path
`clipsearch train --config` takes, keep every key they set, and say in their header where they
come from, what data they expect and how to run them. Data paths need not exist here."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from clipsearch.config import flatten, load_config, read_yaml
from clipsearch.data import check_eval_sources, retrieval_source, zeroshot_source, zeroshot_templates
from clipsearch.tasks import is_image_task

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
#: file -> (source report, image-only task?)
EXPECTED = {
    "clip_cc3m_isogclr_radam.yaml": ("Seed 001", False),
    "faces_supcon_vitl14_336.yaml": ("Seed 000", True),
    "scenes_supcon_resnet18.yaml": ("Seed 002", True),
}


def header(path: Path) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return "\n".join(lines)


def commands(path: Path) -> list[list[str]]:
    """The header's `clipsearch ...` commands, continuation lines joined, as argument lists."""
    text = header(path).replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if line.startswith("clipsearch ")]


def test_every_report_has_its_experiment_and_nothing_else_is_there():
    assert sorted(p.name for p in EXPERIMENTS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_and_keeps_every_key_it_sets(name):
    path = EXPERIMENTS / name
    cfg = load_config(path)  # what `clipsearch train --config` does: preset, file, every key validated
    flat = cfg.flat()
    for key, value in flatten(read_yaml(path)).items():
        assert key in flat, f"{name}: {key} is not a config key"
        assert flat[key] == value, f"{name}: {key} is {flat[key]!r} after loading, the file says {value!r}"
    assert is_image_task(cfg) == EXPECTED[name][1]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_header_names_the_report_the_data_and_the_command(name):
    text = header(EXPERIMENTS / name)
    assert text.startswith(EXPECTED[name][0]) and "Data" in text and "expected" in text
    assert ["clipsearch", "train", "--config", f"experiments/{name}"] in commands(EXPERIMENTS / name)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_command_in_the_header_is_valid(name):
    for argv in commands(EXPERIMENTS / name):
        sets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
        if argv[1] == "train":
            load_config(ROOT / argv[argv.index("--config") + 1], sets)
        else:  # a search: its space ships in search_spaces/, named in the header
            assert argv[1] in ("protocol", "sweep"), argv
            assert all(s.split("=", 1)[0].count(".") == 1 for s in sets), argv
    for space in (word for word in header(EXPERIMENTS / name).split() if word.startswith("search_spaces/")):
        assert (ROOT / space.rstrip(",):")).is_file(), space


def test_the_clip_experiment_evaluates_on_coco_and_imagenet_not_on_held_out_pairs():
    cfg = load_config(EXPERIMENTS / "clip_cc3m_isogclr_radam.yaml")
    check_eval_sources(cfg.data)  # the key combination check of check_sources, without its file checks
    assert retrieval_source(cfg.data) == "data/coco/captions_karpathy_test5k.json"
    assert zeroshot_source(cfg.data) == "data/imagenet/val"
    assert len(zeroshot_templates(cfg.data)) == 80
