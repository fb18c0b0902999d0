"""Where trials run: an existing Ray cluster (--address) or a local one started here."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

FORWARDED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CLIPSEARCH_TEST_FAULT")


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Connect to `address`, or start a local cluster with every core of this machine; print
    the dashboard URL; shut down on exit. Inside a running session (tests, the protocol), the
    session is reused."""
    import ray

    if ray.is_initialized():
        yield
        return
    local = address is None
    if local:
        # workers of a local cluster inherit this process's environment (HF_HUB_OFFLINE, ...)
        context = ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=True, logging_level="WARNING")
    else:
        # a cluster's workers do not: hand them the variables clipsearch's trials read
        env = {k: os.environ[k] for k in FORWARDED if k in os.environ}
        context = ray.init(address=address, runtime_env={"env_vars": env}, logging_level="WARNING")
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
