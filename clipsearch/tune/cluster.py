"""Where trials run: an existing Ray cluster (--address) or a local one started here."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from .trial_hook import load_epoch_hook

#: what a remote cluster's workers are handed, with every CLIPSEARCH_* variable (the trial hook
#: and whatever it reads)
FORWARDED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Connect to `address`, or start a local cluster with every core of this machine; print
    the dashboard URL; shut down on exit. Inside a running session (tests, the protocol), the
    session is reused."""
    import ray

    load_epoch_hook()  # a bad CLIPSEARCH_TRIAL_HOOK: one line now, not an error in every trial
    if ray.is_initialized():
        yield
        return
    local = address is None
    if local:
        # workers of a local cluster inherit this process's environment (HF_HUB_OFFLINE, ...)
        context = ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=True, logging_level="WARNING")
    else:
        # a cluster's workers do not: hand them the variables clipsearch's trials read
        env = {k: v for k, v in os.environ.items() if k in FORWARDED or k.startswith("CLIPSEARCH_")}
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
