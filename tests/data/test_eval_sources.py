"""What a user's own pairs are evaluated on: a held-out share of their pairs for retrieval unless
data.val_source is given, and a zero-shot set they name (never the embedded digits unasked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.config import DataConfig, load_config
from clipsearch.data import (EMBEDDED, HELD_OUT, check_sources, heldout_split, load_eval_sets, load_training_set,
                             retrieval_source, zeroshot_source)
from clipsearch.data.imageset import ImageTextSet
from clipsearch.errors import InputError

N_IMAGES = 20


@pytest.fixture
def pairs(tmp_path) -> Path:
    """pairs.jsonl: N_IMAGES images (i.png), two captions each, so 40 rows."""
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(N_IMAGES):
        Image.new("RGB", (10, 12), (12 * i, 255 - 12 * i, 90)).save(tmp_path / "img" / f"{i}.png")
        rows += [{"image": f"img/{i}.png", "caption": f"square number {i}"},
                 {"image": f"img/{i}.png", "caption": f"shade {i}"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def data_cfg(pairs: Path, **keys) -> DataConfig:
    return DataConfig(source=str(pairs), cache_dir=str(pairs.parent / "cache"), image_size=8, **keys)


def toy_set(n: int) -> ImageTextSet:
    return ImageTextSet(images=np.zeros((n, 4, 4, 3), np.uint8), captions=[[f"c{i}"] for i in range(n)],
                        names=[f"{i}.png" for i in range(n)])


def test_heldout_split_is_disjoint_deterministic_and_covers_every_image():
    train, held = heldout_split(toy_set(50), 0.1)
    assert held.names == [f"{i}.png" for i in range(45, 50)]  # the file's last 10%
    assert train.names == [f"{i}.png" for i in range(45)]
    assert heldout_split(toy_set(50), 0.1)[1].names == held.names


def test_heldout_split_keeps_at_least_one_image_and_refuses_a_set_too_small():
    assert len(heldout_split(toy_set(3), 0.01)[1]) == 1
    with pytest.raises(InputError) as err:
        heldout_split(toy_set(1), 0.1)
    assert err.value.where == "data.val_fraction" and "data.val_source" in err.value.fix


def test_user_pairs_without_val_source_are_evaluated_on_their_own_held_out_images(pairs, capsys):
    cfg = data_cfg(pairs, zeroshot_source=EMBEDDED, val_fraction=0.25)
    train, sets = load_training_set(cfg), load_eval_sets(cfg)
    assert retrieval_source(cfg) == HELD_OUT
    assert len(sets.retrieval) == 5 and len(train) == 15  # the training set shrinks by what is held out
    assert not set(train.names) & set(sets.retrieval.names)
    assert sorted(train.names + sets.retrieval.names) == sorted(f"img/{i}.png" for i in range(N_IMAGES))
    assert all(len(c) == 2 for c in sets.retrieval.captions)  # an image's captions go with it
    line = capsys.readouterr().err.strip()
    assert "last 25% of" in line and "5 of 20" in line and "10 captions" in line and "data.val_source" in line


def test_data_fraction_takes_its_share_of_the_training_part_only(pairs):
    cfg = data_cfg(pairs, zeroshot_source=EMBEDDED, fraction=0.5)
    train, held = load_training_set(cfg), load_eval_sets(cfg).retrieval
    assert len(held) == 2 and len(train) == 9 and not set(train.names) & set(held.names)


def test_explicit_embedded_val_source_evaluates_on_the_digits_and_trains_on_every_pair(pairs, capsys):
    cfg = data_cfg(pairs, val_source=EMBEDDED, zeroshot_source=EMBEDDED)
    assert len(load_training_set(cfg)) == N_IMAGES
    assert len(load_eval_sets(cfg).retrieval) == 1000  # the held-out MNIST 1,000
    assert "held out" not in capsys.readouterr().err


def test_user_pairs_without_zeroshot_source_exit_with_the_key_and_the_fix(pairs):
    with pytest.raises(InputError) as err:
        check_sources(data_cfg(pairs), image_text=True)
    assert err.value.where == "data.zeroshot_source"
    assert "ImageFolder" in err.value.fix and "'embedded'" in err.value.fix


def test_image_only_data_needs_no_zeroshot_source(pairs):
    check_sources(data_cfg(pairs.parent))  # an image folder for supcon / ce: no evaluation sets to name


def test_val_image_root_without_val_source_is_refused(pairs):
    with pytest.raises(InputError) as err:
        check_sources(data_cfg(pairs, zeroshot_source=EMBEDDED, val_image_root=str(pairs.parent)), image_text=True)
    assert err.value.where == "data.val_image_root" and "data.val_source" in err.value.fix


def test_the_embedded_default_still_evaluates_on_the_digits():
    cfg = load_config(quick=True).data
    assert (cfg.val_source, cfg.zeroshot_source) == (None, None)
    assert retrieval_source(cfg) == EMBEDDED and zeroshot_source(cfg) == EMBEDDED
    sets = load_eval_sets(cfg)
    assert len(sets.retrieval) == 1000 and len(sets.zeroshot) == 1797


def _cli_train(*settings: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    args = [a for s in settings for a in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "clipsearch.cli", "train", "--quick", "--no-progress", *args,
                           "--output", str(cwd / "run")], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_on_user_pairs_without_zeroshot_source_is_one_line_exit_2_and_writes_nothing(pairs):
    out = _cli_train(f"data.source={pairs}", cwd=pairs.parent)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "data.zeroshot_source" in out.stderr
    assert not (pairs.parent / "run").exists()


def test_train_on_user_pairs_trains_on_the_rest_and_says_what_it_evaluates(pairs):
    out = _cli_train(f"data.source={pairs}", "data.zeroshot_source=embedded", f"data.cache_dir={pairs.parent / 'c'}",
                     "data.image_size=16", "train.epochs=1", "train.batch_size=6", "train.threads=1",
                     cwd=pairs.parent)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["train_images"] == 18  # 20 images, the last 10% held out
    assert "retrieval is evaluated on the last 10% of" in out.stderr and "2 of 20" in out.stderr
    # what was ranked: the 2 held-out images with their 2 captions each (TR@1 = 2/4, IR@1 = 1/2
    # at random) and the embedded digits' 10 classes
    assert result["chance_objective"] == pytest.approx((50 + 50 + 10) / 3)
