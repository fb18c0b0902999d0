"""An optional function every trial calls after each of its epochs, installed from outside.

CLIPSEARCH_TRIAL_HOOK="package.module:function" names `function(values, epoch)`, which the
trainable calls after each epoch's training and evaluation and before it reports that epoch:
`values` is the trial's flat config, `epoch` the epoch just run. What it raises fails the trial
as an error of train() would (Tune retries it from its checkpoint). Unset, as clipsearch itself
always leaves it, nothing is called: the hook is for tests and the reliability bench
(clipsearch.bench.faults injects failures through it). The workers of a local Ray cluster
inherit it from the driver; `cluster.ray_session` checks it before Ray starts and hands it to a
remote cluster's workers.

No Ray here: the driver checks the hook before any cluster exists.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

from ..errors import InputError

TRIAL_HOOK_ENV = "CLIPSEARCH_TRIAL_HOOK"
EpochHook = Callable[[dict[str, Any], int], None]


def load_epoch_hook() -> EpochHook | None:
    """The function CLIPSEARCH_TRIAL_HOOK names, or None when it is unset; an InputError naming
    the variable when it names nothing callable."""
    spec = os.environ.get(TRIAL_HOOK_ENV, "").strip()
    if not spec:
        return None
    module_name, _, attribute = spec.partition(":")
    fix = f"set {TRIAL_HOOK_ENV} to package.module:function (a function of a trial's config and epoch), or unset it"
    if not module_name or not attribute:
        raise InputError(f"{spec!r} is not package.module:function", where=TRIAL_HOOK_ENV, fix=fix)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import {module_name!r} ({exc})", where=TRIAL_HOOK_ENV, fix=fix) from None
    hook = getattr(module, attribute, None)
    if not callable(hook):
        raise InputError(f"{module_name} has no function {attribute!r}", where=TRIAL_HOOK_ENV, fix=fix)
    return hook
