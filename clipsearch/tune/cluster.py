"""Where trials run: an existing Ray cluster (--address) or a local one started here."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

# Tune warns each time a checkpoint forces an experiment snapshot; with CheckpointConfig(
# num_to_keep=1) that is by design (the snapshot is what makes --resume lose nothing).
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


@contextlib.contextmanager
def ray_session(address: str | None = None, quiet: bool = False) -> Iterator[None]:
    """Connect to `address`, or start a local cluster with every core of this machine; print
    the dashboard URL; shut down on exit. Inside a running session (tests, the protocol), the
    session is reused."""
    import ray

    if ray.is_initialized():
        yield
        return
    local = address is None
    context = ray.init(address=address or "local", num_cpus=os.cpu_count() if local else None,
                       include_dashboard=True, logging_level="WARNING")
    if not quiet:
        _print_dashboard(context.dashboard_url)
    try:
        yield
    finally:
        ray.shutdown()


def _print_dashboard(url: str | None) -> None:
    if not url:
        print("Ray dashboard: not running", file=sys.stderr)
        return
    token = Path.home() / ".ray" / "auth_token"
    hint = f" (token auth: send the token in {token})" if token.is_file() else ""
    print(f"Ray dashboard: http://{url.removeprefix('http://')}{hint}", file=sys.stderr)
