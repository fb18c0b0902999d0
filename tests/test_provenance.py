"""What a run was made of (clipsearch.provenance): the code's version, with the git commit only
from a git checkout and never a failure without git; the data sets with stable digests."""

import hashlib
import os
import shutil
import subprocess

import pytest

from clipsearch import provenance
from clipsearch.config import load_config
from clipsearch.provenance import GIT_COMMIT_TAG, code_version, data_sources, git_commit


def test_the_code_version_names_clipsearch_torch_and_ray():
    import torch

    import clipsearch

    tags = code_version()
    assert tags["clipsearch.version"] == clipsearch.__version__ and tags["torch.version"] == torch.__version__
    assert tags["ray.version"]


@pytest.mark.skipif(shutil.which("git") is None or git_commit() is None, reason="not run from a git checkout")
def test_from_a_git_checkout_the_commit_is_heads():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=provenance.PACKAGE_DIR, capture_output=True, text=True)
    assert code_version()[GIT_COMMIT_TAG] == head.stdout.strip()
    assert code_version()["clipsearch.git.dirty"] in ("true", "false")


def test_without_git_there_is_no_commit_and_no_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to be found
    assert git_commit() is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_package_that_git_does_not_track_has_no_commit(tmp_path):
    """A wheel installed into a virtual environment inside some repository is not that repository's code."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    package = tmp_path / ".venv" / "clipsearch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert git_commit(package) is None
    assert git_commit(tmp_path / "nowhere") is None  # a folder that does not exist either


def by_context(sources):
    return {s.context: s for s in sources}


def test_the_embedded_sets_are_named_with_a_digest_of_their_identity():
    sources = by_context(data_sources(load_config(None, ["data.fraction=0.5"], quick=True)))
    assert list(sources) == ["training", "retrieval", "zero-shot"]
    assert sources["training"].name == "embedded:mnist5000-captions" and sources["training"].share == 0.5
    assert sources["zero-shot"].name == "embedded:sklearn-digits-8x8"
    assert all(s.digest_of == "identity" and len(s.digest) == 16 and s.embedded for s in sources.values())
    again = by_context(data_sources(load_config(None, [], quick=True)))
    assert again["training"].digest == sources["training"].digest  # the share is not the set's identity


def test_a_pairs_file_is_named_by_its_path_and_the_digest_of_its_bytes(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"image": "a.png", "caption": "a cat"}\n')
    cfg = load_config(None, [f"data.source={pairs}", "data.zeroshot_source=embedded"], quick=True)
    sources = by_context(data_sources(cfg))
    training, held_out = sources["training"], sources["retrieval"]
    assert training.uri == str(pairs) and training.name == "pairs.jsonl" and training.digest_of == "content"
    assert training.digest == hashlib.sha256(pairs.read_bytes()).hexdigest()[:16]
    # the held-out share is another set of images: another name and digest, so MLflow keeps both
    assert held_out.uri == str(pairs) and "held out" in held_out.name and held_out.digest != training.digest
    pairs.write_text('{"image": "a.png", "caption": "a dog"}\n')
    os.utime(pairs, ns=(1, 1))  # the cached digest is keyed on size and mtime, as the image cache is
    assert by_context(data_sources(cfg))["training"].digest != training.digest


def test_a_folder_is_digested_by_its_listing(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        (tmp_path / "train" / cls / "1.png").write_bytes(b"x")
    cfg = load_config(None, ["loss.name=supcon", f"data.source={tmp_path}"], quick=True)
    training = data_sources(cfg)[0]
    assert training.context == "training" and training.digest_of == "listing" and training.uri == str(tmp_path)
