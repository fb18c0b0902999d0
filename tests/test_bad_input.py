"""Bad input, case by case, through the real command line: each malformed search space, config,
data file or argument must give exit code 2 and exactly one line on stderr that names the
problem (the file or key), no traceback, nothing on stdout and no file written.

The cases run in forks of one process that has loaded clipsearch once (tests/cli_forks.py),
each calling clipsearch.cli.main() in its own folder: the same code path as the console script,
without paying the model libraries' imports per case. tests/test_cli.py and
tests/tune/test_cli.py run a few such cases in fresh processes; the census below counts only
the cases of this file.
"""

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

SPACE_OK = "base: quick\nnum_samples: 2\nparams:\n  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
PAIRS_OK = "image,caption\na.png,a white square\nb.png,a grey square\n"
TRAIN = ["train", "--quick", "--no-progress"]


def png(shade=255) -> bytes:
    out = io.BytesIO()
    Image.new("L", (16, 16), shade).save(out, "PNG")
    return out.getvalue()


def jpeg_cut() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(out, "JPEG")
    return out.getvalue()[:60]  # the header and not the picture


def tar_of(members: dict) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


IMAGES = {"a.png": png(255), "b.png": png(128)}
LOOP = ("symlink", "loop.yaml")        # a file that is a link to itself
DIR_LOOP = ("symlink", ".")            # a folder link back to its parent: a loop for a walker


def data_case(source_key: str, file_name: str, content, named: str, *more_files, extra=()) -> tuple:
    files = {**IMAGES, file_name: content, **dict(more_files)}
    # the user's own pairs need a zero-shot set (none given is bad input of its own): the digits
    zeroshot = [] if source_key == "zeroshot_source" else ["--set", "data.zeroshot_source=embedded"]
    return ("data file", [*TRAIN, "--set", f"data.{source_key}={file_name}", *zeroshot, *extra], files, named)


# id: (category, argv, files to lay down in the case's folder, text the one line must hold)
CASES = {
    # ---------------------------------------------------------------- search spaces
    "space: file missing": ("search space", ["phase1", "--space", "nope.yaml"], {}, "nope.yaml"),
    "space: not YAML": ("search space", ["phase1", "--space", "s.yaml"], {"s.yaml": "params: [oops\n"}, "s.yaml"),
    "space: python tag": ("search space", ["phase1", "--space", "s.yaml"],
                          {"s.yaml": "params: !!python/object/apply:os.system ['touch pwned']\n"}, "python/object"),
    "space: a list": ("search space", ["phase1", "--space", "s.yaml"], {"s.yaml": "- a\n- b\n"}, "s.yaml"),
    "space: params not a mapping": ("search space", ["phase1", "--space", "s.yaml"], {"s.yaml": "params: 3\n"},
                                    "params"),
    "space: a folder": ("search space", ["phase1", "--space", "s.yaml"], {"s.yaml/x": "a: 1\n"}, "s.yaml"),
    "space: symlink loop": ("search space", ["phase1", "--space", "loop.yaml"], {"loop.yaml": LOOP}, "loop.yaml"),
    "space: latin-1 bytes": ("search space", ["phase1", "--space", "s.yaml"],
                             {"s.yaml": "base: quick\n# caf\xe9\n".encode("latin-1")}, "s.yaml"),
    "space: unknown distribution": ("search space", ["phase1", "--space", "s.yaml"],
                                    {"s.yaml": "params:\n  optimizer.lr: {gaussian: [0, 1]}\n"}, "gaussian"),
    "space: loguniform low 0": ("search space", ["phase1", "--space", "s.yaml"],
                                {"s.yaml": "params:\n  optimizer.lr: {loguniform: [0, 1]}\n"}, "optimizer.lr"),
    "space: low > high": ("search space", ["phase1", "--space", "s.yaml"],
                          {"s.yaml": "params:\n  optimizer.lr: {uniform: [0.5, 0.1]}\n"}, "optimizer.lr"),
    "space: empty choice": ("search space", ["phase1", "--space", "s.yaml"],
                            {"s.yaml": "params:\n  loss.name: {choice: []}\n"}, "loss.name"),
    "space: unknown config key": ("search space", ["phase1", "--space", "s.yaml"],
                                  {"s.yaml": "params:\n  train.nope: {choice: [1, 2]}\n"}, "train.nope"),
    "space: when on a missing parameter": ("search space", ["phase1", "--space", "s.yaml"],
                                           {"s.yaml": "params:\n  optimizer.lr: {uniform: [0.1, 0.5], "
                                                      "when: {ghost: [a]}}\n"}, "ghost"),
    "space: num_samples 0": ("search space", ["phase1", "--space", "s.yaml"],
                             {"s.yaml": "num_samples: 0\nparams:\n  optimizer.lr: {uniform: [0.1, 0.5]}\n"},
                             "num_samples"),
    "space: unknown top-level key": ("search space", ["phase1", "--space", "s.yaml"],
                                     {"s.yaml": SPACE_OK + "sampels: 3\n"}, "sampels"),
    "space: a list as a parameter": ("search space", ["phase1", "--space", "s.yaml"],
                                     {"s.yaml": "params:\n  optimizer.lr: [0.1, 0.2]\n"}, "optimizer.lr"),
    # ---------------------------------------------------------------- configs
    "config: file missing": ("config", ["train", "--config", "c.yaml"], {}, "c.yaml"),
    "config: python tag": ("config", ["train", "--config", "c.yaml"],
                           {"c.yaml": "train: !!python/object/apply:os.system ['touch pwned']\n"}, "python/object"),
    "config: not YAML": ("config", ["train", "--config", "c.yaml"], {"c.yaml": "train: {epochs: 1\n"}, "c.yaml"),
    "config: a list": ("config", ["train", "--config", "c.yaml"], {"c.yaml": "[1, 2]\n"}, "c.yaml"),
    "config: binary junk": ("config", ["train", "--config", "c.yaml"], {"c.yaml": b"\xff\xfe\x00\x81junk"}, "c.yaml"),
    "config: symlink loop": ("config", ["train", "--config", "loop.yaml"], {"loop.yaml": LOOP}, "loop.yaml"),
    "config: unknown section": ("config", ["train", "--config", "c.yaml"], {"c.yaml": "trian: {epochs: 1}\n"}, "trian"),
    "config: unknown key": ("config", ["train", "--config", "c.yaml"], {"c.yaml": "train: {epoch: 1}\n"}, "epoch"),
    "config: wrong type": ("config", ["train", "--config", "c.yaml"], {"c.yaml": "train: {epochs: ten}\n"},
                           "train.epochs"),
    "config: negative lr": ("config", ["train", "--config", "c.yaml"], {"c.yaml": "optimizer: {lr: -1}\n"},
                            "optimizer.lr"),
    "config: fraction above 1": ("config", [*TRAIN, "--set", "data.fraction=2"], {}, "data.fraction"),
    "config: unknown optimizer": ("config", [*TRAIN, "--set", "optimizer.name=adamx"], {}, "optimizer.name"),
    "config: parameter of another loss": ("config", [*TRAIN, "--set", "loss.gamma=0.5"], {}, "gamma"),
    "config: --set without =": ("config", [*TRAIN, "--set", "train.epochs"], {}, "--set"),
    "config: --set empty key": ("config", [*TRAIN, "--set", "=3"], {}, "--set"),
    "config: resume without checkpoint": ("config", ["train", "--resume", "run"], {"run/config.yaml": "{}\n"},
                                          "--resume"),
    # ---------------------------------------------------------------- data files
    "data: missing file": data_case("source", "pairs.csv", None, "nope.csv", extra=["--set", "data.source=nope.csv"]),
    "data: wrong columns": data_case("source", "pairs.csv", "path,text_en\na.png,x\n", "missing columns"),
    "data: empty caption": data_case("source", "pairs.csv", "image,caption\na.png,\nb.png,grey\n", "empty 'caption'"),
    "data: no rows": data_case("source", "pairs.csv", "image,caption\n", "pairs.csv"),
    "data: bad JSONL line": data_case("source", "pairs.jsonl", '{"image": "a.png", "caption": "x"}\n{oops\n',
                                      "pairs.jsonl"),
    "data: JSON not a list": data_case("source", "pairs.json", '"just a string"', "pairs.json"),
    "data: mixed encodings": data_case("source", "pairs.csv",
                                       "image,caption\na.png,caf\u00e9\n".encode() + "b.png,caf\xe9\n".encode("latin-1"),
                                       "pairs.csv"),
    "data: missing image": data_case("source", "pairs.csv", "image,caption\na.png,x\nghost.png,y\n", "ghost.png"),
    "data: corrupt JPEG": data_case("source", "pairs.csv", "image,caption\na.png,x\ncut.jpg,y\n", "cut.jpg",
                                    ("cut.jpg", jpeg_cut())),
    "data: caption file with symlink loop": data_case("source", "loop.csv", ("symlink", "loop.csv"), "loop.csv"),
    "data: image folder of symlink loops": data_case(
        "zeroshot_source", "zs", ("dir",), "zs", ("zs/one/loop", DIR_LOOP), ("zs/two/loop", ("symlink", "../two"))),
    "data: image folder without classes": data_case("zeroshot_source", "zs", ("dir",), "zs", ("zs/a.png", png())),
    "data: COCO file without images": data_case("val_source", "coco.json", '{"annotations": []}', "coco.json"),
    "data: no shard matches": data_case("source", "shards", ("dir",), "shard-0.tar",
                                        extra=["--set", "data.source=shards/shard-{0..3}.tar"]),
    "data: shard is not a tar": data_case("source", "s.tar", b"not a tar at all" * 64, "s.tar"),
    "data: shard text not UTF-8": data_case("source", "s.tar", tar_of({"0.png": png(), "0.txt": b"caf\xe9"}),
                                            "0.txt"),
    # ---------------------------------------------------------------- command-line arguments
    "cli: unknown option": ("argument", ["phase1", "--bogus"], {}, "--bogus"),
    "cli: not a number": ("argument", ["phase1", "--num-samples", "abc"], {}, "--num-samples"),
    "cli: unknown command": ("argument", ["phase9"], {}, "phase9"),
    "cli: option without value": ("argument", ["train", "--config"], {}, "--config"),
    "cli: bad experiment name": ("argument", ["phase1", "--quick", "--name", "../up"], {}, "--name"),
    "cli: zero cpus per trial": ("argument", ["phase1", "--quick", "--cpus-per-trial", "0"], {}, "--cpus-per-trial"),
    "cli: phase 2 without phase 1": ("argument", ["phase2", "--quick", "--name", "x"], {}, "phase1"),
    "cli: resume what never ran": ("argument", ["phase1", "--quick", "--name", "x", "--resume"], {}, "resume"),
    "cli: report of a missing folder": ("argument", ["report", "results/none"], {}, "results/none"),
    "cli: bench eval with 0 queries": ("argument", ["bench", "eval", "--queries", "0"], {}, "--queries"),
}


def lay_down(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            continue
        if isinstance(content, tuple) and content[0] == "symlink":
            os.symlink(content[1], path)
        elif isinstance(content, tuple) and content[0] == "dir":
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def listing(folder: Path) -> set[str]:
    # followlinks off: a case's own symlink loop must not loop the listing
    return {os.path.relpath(os.path.join(root, name), folder)
            for root, dirs, names in os.walk(folder) for name in dirs + names}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case run once; per case: the result and the files before and after."""
    root = tmp_path_factory.mktemp("bad_input")
    cases, before = [], {}
    for number, (case_id, (_, argv, files, _)) in enumerate(CASES.items()):
        cwd, logs = root / f"case{number}", root / f"logs{number}"
        lay_down(cwd, files)
        logs.mkdir()
        before[case_id] = listing(cwd)
        cases.append({"id": case_id, "args": argv, "cwd": str(cwd), "logs": str(logs)})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("cli_forks.py"))], input=json.dumps(cases),
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["id"]: r for r in json.loads(done.stdout)}
    return {c["id"]: (results[c["id"]], before[c["id"]], listing(Path(c["cwd"]))) for c in cases}


#: cases whose file asks YAML to run code (a python tag): the census files them under security
RUNS_CODE = {"space: python tag", "config: python tag"}


def census_category(case_id: str) -> str:
    """What `clipsearch bench reliability` files the case under (its census marker)."""
    return "security" if case_id in RUNS_CODE else f"bad input: {CASES[case_id][0]}"


def test_the_census_has_at_least_40_cases_in_every_category():
    categories = [category for category, *_ in CASES.values()]
    assert len(CASES) >= 40
    assert {c: categories.count(c) >= 5 for c in set(categories)} == dict.fromkeys(set(categories), True)


@pytest.mark.parametrize("case_id", [pytest.param(c, marks=pytest.mark.census(census_category(c))) for c in CASES])
def test_bad_input_is_exit_2_one_line_naming_it_and_nothing_written(outcomes, case_id):
    result, before, after = outcomes[case_id]
    named = CASES[case_id][3]
    lines = result["stderr"].strip().splitlines()
    assert result["code"] == 2, result["stderr"][-3000:]
    assert len(lines) == 1 and "Traceback" not in result["stderr"], result["stderr"][-3000:]
    assert lines[0].startswith("clipsearch: error: ") and named in lines[0], lines[0]
    assert result["stdout"] == ""
    assert after == before, sorted(after - before)
