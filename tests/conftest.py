import atexit
import contextlib
import os
import resource
import shutil
import signal
import tempfile

import pytest

# Tests never reach a model hub: a miss must fail at once, not retry for ~46 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The report a search ends with, without its PNG copies: each would start Chromium (3-10 s a
# report, some 20 searches in the suite); the PNG export has its own tests (report/test_browser.py)
os.environ.setdefault("CLIPSEARCH_REPORT_PNG", "0")
# One machine cache for the session, as a fresh CI machine has it, never the user's ~/.cache
# (its entries for the tests' temporary files would pile up there); the subprocesses and their
# Ray workers inherit it
if "CLIPSEARCH_CACHE_DIR" not in os.environ:
    os.environ["CLIPSEARCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="clipsearch-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CLIPSEARCH_CACHE_DIR"], True)


@contextlib.contextmanager
def _file_size_limit(limit_bytes):
    """Writes past `limit_bytes` fail with EFBIG for the duration (what a full disk does with ENOSPC)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.fixture
def file_size_limit():
    """`with file_size_limit(n):` a disk that takes only n bytes more a file (the full-disk tests)."""
    return _file_size_limit


@pytest.fixture(scope="session")
def finished_quick_phase(tmp_path_factory):
    """One finished `clipsearch phase1 --quick --name demo` (two 1-epoch trials on 5% of the
    pairs), run once for every test that only reads what a finished phase leaves (results/demo/
    phase1, its MLflow runs and registered model, its Optuna study): (folder it ran in, the
    finished process). Readers must not change it."""
    from tests.tune.helpers import run_cli

    root = tmp_path_factory.mktemp("finished_quick_phase")
    out = run_cli("phase1", "--quick", "--name", "demo", "--num-samples", "2", "--set", "train.epochs=1",
                  "--set", "data.fraction=0.05", cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return root, out
