"""The path a real user takes: caption file + COCO validation + ImageFolder, through `train`
and through the CLI (including its one-line errors for bad data)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clipsearch.config import load_config
from clipsearch.train import train

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _image(path, colour, seed):
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (20, 24, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def real_data(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows, karpathy = [], {"images": []}
    for i in range(24):
        name = list(COLOURS)[i % 3]
        _image(images / f"{i}.png", COLOURS[name], i)
        rows.append({"image": f"images/{i}.png", "caption": f"a {name} square", "image_id": str(i)})
        rows.append({"image": f"images/{i}.png", "caption": f"something {name}", "image_id": str(i)})
        karpathy["images"].append({"filename": f"{i}.png", "split": "test",
                                   "sentences": [{"raw": f"a {name} square"}]})
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    (tmp_path / "coco.json").write_text(json.dumps(karpathy))
    for name, colour in COLOURS.items():
        (tmp_path / "classes" / name).mkdir(parents=True)
        for j in range(3):
            _image(tmp_path / "classes" / name / f"{j}.png", colour, 100 + j)
    return tmp_path


def settings(root):
    return [f"data.source={root / 'pairs.json'}", f"data.val_source={root / 'coco.json'}",
            f"data.val_image_root={root / 'images'}", f"data.zeroshot_source={root / 'classes'}",
            f"data.cache_dir={root / 'cache'}", "data.image_size=16", "train.epochs=2",
            "train.batch_size=8", "train.threads=1"]


def test_train_runs_on_caption_file_coco_and_image_folder(real_data):
    result = train(load_config(quick=True, overrides=settings(real_data)))
    assert result["epoch"] == 2 and result["train_images"] == 24
    # evaluated on coco.json (24 images, one caption each) and the ImageFolder (3 classes, 9
    # images), not on the embedded sets: a random ranking's TR@1 = IR@1 = 1/24 and ACC@1 = 1/3
    assert result["chance_objective"] == pytest.approx((100 / 24 + 100 / 24 + 100 / 3) / 3)
    for key, queries in (("tr1", 24), ("ir1", 24), ("acc1", 9)):
        hits = result[key] * queries / 100
        assert hits == pytest.approx(round(hits)), f"{key} = {result[key]} is not a share of {queries} queries"
    assert list((real_data / "cache").glob("*.npy")), "decoded images were cached"


def run_cli(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "clipsearch.cli", "train", "--quick", "--no-progress", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _break_caption(root):
    rows = json.loads((root / "pairs.json").read_text())
    rows[3]["caption"] = ""
    (root / "pairs.json").write_text(json.dumps(rows))


def _corrupt_image(root):
    (root / "images" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


@pytest.mark.parametrize("breaks, named", [(_break_caption, "pairs.json"), (_corrupt_image, "5.png")])
def test_bad_data_exits_2_naming_the_file_and_writes_no_run(real_data, breaks, named):
    breaks(real_data)
    out = run_cli(*[a for s in settings(real_data) for a in ("--set", s)], "--output", str(real_data / "run"),
                  cwd=real_data)
    assert out.returncode == 2, out.stderr
    assert named in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (real_data / "run").exists()


def test_corrupt_image_is_skipped_and_counted_when_asked(real_data):
    _corrupt_image(real_data)
    result = train(load_config(quick=True, overrides=settings(real_data) + ["data.on_corrupt=skip", "train.epochs=1"]))
    assert result["epoch"] == 1 and result["skipped_images"] == 1 and result["train_images"] == 23
