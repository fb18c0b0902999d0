"""Zero-shot class names and prompt templates: data.zeroshot_classnames, data.zeroshot_templates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clipsearch.config import DataConfig
from clipsearch.data import GENERIC_PROMPTS, check_zeroshot_naming, zeroshot_templates
from clipsearch.data.embedded import PROMPTS
from clipsearch.data.readers import folder_class_names, imagenet_class_names, load_image_folder_set
from clipsearch.errors import InputError

TENCH, GOLDFISH = "n01440764", "n01443537"  # ImageNet-1k's classes 0 and 1


def image_folder(root: Path, classes: list[str]) -> Path:
    for shade, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (12, 12), (40 * shade, 0, 0)).save(root / name / "0.png")
    return root


def data_cfg(tmp_path: Path, **keys) -> DataConfig:
    return DataConfig(cache_dir=str(tmp_path / "cache"), image_size=8, **keys)


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_text(text, encoding=encoding)
    return str(path)


# ------------------------------------------------------------------------------ class names

def test_wordnet_id_folders_get_imagenet_class_names(tmp_path):
    root = image_folder(tmp_path / "val", [GOLDFISH, TENCH])
    data = load_image_folder_set(root, 8, tmp_path / "cache", progress=False, class_names="auto")
    assert data.class_names == ["tench", "goldfish"]  # sorted folder order: n01440764 first
    assert data.captions == [["tench"], ["goldfish"]]


def test_imagenet_names_follow_the_sorted_wordnet_id_order():
    names = imagenet_class_names()
    assert len(names) == 1000 and list(names) == sorted(names)
    assert names["n15075141"] == "toilet paper"  # the last class, 999


@pytest.mark.parametrize("folders", [["cat", "dog"], [TENCH, "dog"], [TENCH, "n99999999"]])
def test_auto_keeps_folder_names_unless_every_folder_is_an_imagenet_id(folders):
    assert folder_class_names(folders, "auto") == folders


def test_folders_keeps_wordnet_ids_as_they_are():
    assert folder_class_names([TENCH], "folders") == [TENCH]


def test_imagenet_names_for_other_folders_are_bad_input():
    with pytest.raises(InputError, match=r"data.zeroshot_classnames=imagenet: 1 of 2 .*'dog'.*fix: .*folders"):
        folder_class_names([TENCH, "dog"], "imagenet")


def test_a_class_name_file_names_the_folders_in_sorted_order(tmp_path):
    names = write(tmp_path / "names.txt", "a cat\n\nthe dog\n")
    assert folder_class_names(["cat", "dog"], names) == ["a cat", "the dog"]


def test_a_tab_separated_class_name_file_maps_folders_to_names(tmp_path):
    names = write(tmp_path / "names.tsv", "dog\ta dog\ncat\ta cat\nfox\ta fox\n")
    assert folder_class_names(["cat", "dog"], names) == ["a cat", "a dog"]


def test_timms_synset_to_lemma_file_is_a_class_name_file():
    import timm.data

    lemmas = Path(timm.data.__file__).parent / "_info" / "imagenet_synset_to_lemma.txt"
    assert folder_class_names([TENCH], str(lemmas)) == ["tench, Tinca tinca"]


@pytest.mark.parametrize("text, message", [
    ("a cat\n", "1 class names for 2 class folders"),
    ("cat\ta cat\n", "no name for class folder 'dog'"),
    ("cat\ta cat\nthe dog\n", "line 2: mixes"),
    ("\n\n", "empty"),
])
def test_a_class_name_file_that_does_not_fit_the_folders_is_bad_input(tmp_path, text, message):
    names = write(tmp_path / "names.txt", text)
    with pytest.raises(InputError, match=f"data.zeroshot_classnames={names}.*{message}"):
        folder_class_names(["cat", "dog"], names)


def test_an_unknown_class_name_setting_lists_the_values(tmp_path):
    with pytest.raises(InputError, match="data.zeroshot_classnames: 'imagnet' is none of auto, folders, imagenet"):
        folder_class_names(["cat"], "imagnet")


def test_class_names_for_the_embedded_digits_are_bad_input(tmp_path):
    with pytest.raises(InputError, match="data.zeroshot_classnames.*fix: leave it auto"):
        check_zeroshot_naming(data_cfg(tmp_path, zeroshot_classnames="imagenet"))


def test_the_naming_check_reads_the_class_folders(tmp_path):
    root = image_folder(tmp_path / "val", ["cat", "dog"])
    check_zeroshot_naming(data_cfg(tmp_path, zeroshot_source=str(root)))
    with pytest.raises(InputError, match="data.zeroshot_classnames=imagenet"):
        check_zeroshot_naming(data_cfg(tmp_path, zeroshot_source=str(root), zeroshot_classnames="imagenet"))


# ------------------------------------------------------------------------------ templates

def test_auto_templates_keep_the_digits_own_prompts_and_give_folders_the_generic_ones(tmp_path):
    assert zeroshot_templates(data_cfg(tmp_path)) == PROMPTS
    assert zeroshot_templates(data_cfg(tmp_path, zeroshot_source="val")) == GENERIC_PROMPTS


@pytest.mark.parametrize("name, count, first", [("generic", 4, "a photo of a {}."),
                                                ("openai", 80, "a bad photo of a {}."),
                                                ("simple", 7, "itap of a {}.")])
def test_named_template_sets_are_format_strings_with_one_placeholder(tmp_path, name, count, first):
    templates = zeroshot_templates(data_cfg(tmp_path, zeroshot_source="val", zeroshot_templates=name))
    assert len(templates) == count and templates[0] == first
    assert all(t.format("tench").count("tench") == 1 for t in templates)


def test_a_template_file_gives_one_template_a_line(tmp_path):
    path = write(tmp_path / "t.txt", "a photo of a {}.\n\n{{curly}} {}\n")
    assert zeroshot_templates(data_cfg(tmp_path, zeroshot_templates=path)) == ["a photo of a {}.", "{{curly}} {}"]


@pytest.mark.parametrize("line", ["a photo of a cat.", "{} next to a {}", "a {name}", "a { photo {}"])
def test_a_template_without_exactly_one_placeholder_is_bad_input_naming_its_line(tmp_path, line):
    path = write(tmp_path / "t.txt", f"a photo of a {{}}.\n{line}\n")
    with pytest.raises(InputError, match=rf"data.zeroshot_templates={path} line 2: .*fix: write {{}} once"):
        zeroshot_templates(data_cfg(tmp_path, zeroshot_templates=path))


@pytest.mark.parametrize("value", ["openia", "missing.txt"])
def test_an_unknown_template_setting_lists_the_values(tmp_path, value):
    with pytest.raises(InputError, match="data.zeroshot_templates: .* is none of auto, generic, openai, simple"):
        zeroshot_templates(data_cfg(tmp_path, zeroshot_templates=value))


def test_a_template_file_not_in_utf8_is_bad_input(tmp_path):
    path = write(tmp_path / "t.txt", "une photo d'un {} \xe9t\xe9\n", encoding="latin-1")
    with pytest.raises(InputError, match=f"data.zeroshot_templates={path}: not UTF-8 text .* line 1"):
        zeroshot_templates(data_cfg(tmp_path, zeroshot_templates=path))


def test_the_cli_gives_a_bad_template_file_one_line_and_exit_2(tmp_path):
    write(tmp_path / "t.txt", "a photo of a cat.\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "clipsearch.cli", "train", "--quick", "--no-progress",
                          "--set", "data.zeroshot_templates=t.txt"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.zeroshot_templates=t.txt line 1" in lines[0], out.stderr


def test_the_evaluation_sets_of_an_imagenet_val_folder_prompt_with_class_names(tmp_path):
    from clipsearch.data import load_eval_sets

    root = image_folder(tmp_path / "val", [TENCH, GOLDFISH])
    sets = load_eval_sets(data_cfg(tmp_path, zeroshot_source=str(root), zeroshot_templates="simple"))
    assert sets.zeroshot.class_names == ["tench", "goldfish"]
    assert sets.prompts[0].format(sets.zeroshot.class_names[0]) == "itap of a tench."
