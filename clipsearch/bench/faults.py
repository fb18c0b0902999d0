"""Trial faults for tests and the reliability bench, installed from outside the trainable as its
epoch hook (clipsearch.tune.trial_hook).

CLIPSEARCH_FAULTS="KEY=VALUE@EPOCH" (several rules joined by ';') makes every trial whose config
has KEY == VALUE (VALUE * matches any) raise InjectedFault once it has trained past EPOCH,
before reporting that epoch: every attempt fails the same way after resuming from the
checkpoint of EPOCH. A trial follows the first rule its config matches. `fault_env(rules)` is
what a command's environment needs for it: the hook and the rules; the workers of a local Ray
cluster inherit both from the driver.

CLIPSEARCH_OOM="KEY=VALUE@EPOCH" (same rules) makes a matching trial, once past EPOCH, allocate
memory (every page written, so resident) in steps until something kills its process: Ray's
memory monitor, when the node's memory passes RAY_memory_usage_threshold. That is the real
mechanism a trial meets: the raylet SIGKILLs the worker and tells Tune why (an OOM error), and
Tune retries it. Ray enforces no per-trial limit (its `memory` resource only schedules) and
there is no cgroup to give one here, so the bench gives the growing trial the node to itself
(one trial at a time) and sets the node's threshold a few GiB above the memory in use. The
alternatives model less of it: RLIMIT_AS turns the growth into a MemoryError the trial raises
itself (no kill, a normal error), and a hook that SIGKILLs itself past a cap is a death Ray can
only call "unexpected". Past CLIPSEARCH_OOM_CAP_MIB (8 GiB) the hook stops growing and raises
MemoryNotReclaimed instead: no monitor was watching, and the machine is left alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from ..tune.trial_hook import TRIAL_HOOK_ENV

FAULTS_ENV = "CLIPSEARCH_FAULTS"
HOOK = "clipsearch.bench.faults:inject"
OOM_ENV = "CLIPSEARCH_OOM"
OOM_CAP_ENV = "CLIPSEARCH_OOM_CAP_MIB"
OOM_HOOK = "clipsearch.bench.faults:exhaust_memory"
MIB = 2**20
#: 64 MiB every 50 ms: Ray's monitor looks every 250 ms, so it stops the growth within ~0.3 GiB
GROWTH_STEP, GROWTH_PAUSE_S, PAGE = 64 * MIB, 0.05, 4096


class InjectedFault(RuntimeError):
    """The failure a rule of CLIPSEARCH_FAULTS injects."""


class MemoryNotReclaimed(RuntimeError):
    """A CLIPSEARCH_OOM trial grew to its cap and nothing killed it."""


@dataclass(frozen=True)
class Rule:
    """Trials whose config has `key` == `value` (`*`: any) fail after epoch `after`."""

    key: str
    value: str
    after: int
    text: str

    def matches(self, values: dict[str, Any]) -> bool:
        return self.value == "*" or str(values.get(self.key)) == self.value


def parse_rules(text: str) -> list[Rule]:
    """"KEY=VALUE@EPOCH;..." -> the rules, in order; ValueError naming a malformed one."""
    rules = []
    for rule in filter(None, (part.strip() for part in text.split(";"))):
        condition, at, after = rule.rpartition("@")
        key, equals, value = condition.partition("=")
        if not (at and equals and key and value and after.isdigit()):
            raise ValueError(f"{FAULTS_ENV} rule {rule!r} is not KEY=VALUE@EPOCH (e.g. optimizer.name=radam@1)")
        rules.append(Rule(key, value, int(after), rule))
    return rules


def _due(variable: str, values: dict[str, Any], epoch: int) -> Rule | None:
    """The first rule of `variable` this trial's config matches, if it has trained past its epoch."""
    rule = next((r for r in parse_rules(os.environ.get(variable, "")) if r.matches(values)), None)
    return rule if rule is not None and epoch > rule.after else None


def inject(values: dict[str, Any], epoch: int) -> None:
    """The epoch hook: raise InjectedFault if the first rule this trial's config matches says
    it has trained past its epoch."""
    if rule := _due(FAULTS_ENV, values, epoch):
        raise InjectedFault(f"{FAULTS_ENV} rule {rule.text!r}: injected failure at epoch {epoch}")


def exhaust_memory(values: dict[str, Any], epoch: int) -> None:
    """The epoch hook of CLIPSEARCH_OOM: a trial its rules pick grows until it is killed."""
    if rule := _due(OOM_ENV, values, epoch):
        grow_until_killed(int(os.environ.get(OOM_CAP_ENV, "8192")) * MIB, f"{OOM_ENV} rule {rule.text!r}")


def grow_until_killed(cap_bytes: int, why: str = OOM_ENV) -> None:
    """Hold ever more resident memory, GROWTH_STEP at a time; past `cap_bytes`, give it back
    and raise MemoryNotReclaimed (with how far the process's RSS grew)."""
    from .soak import rss_bytes

    before, held = rss_bytes(os.getpid()) or 0, []
    while len(held) * GROWTH_STEP < cap_bytes:
        block = bytearray(GROWTH_STEP)  # zero pages are only reserved until written
        block[::PAGE] = b"\x01" * len(range(0, GROWTH_STEP, PAGE))
        held.append(block)
        time.sleep(GROWTH_PAUSE_S)
    grown = ((rss_bytes(os.getpid()) or 0) - before) // MIB
    held.clear()
    raise MemoryNotReclaimed(f"{why}: the trial's memory grew by {grown} MiB, to its cap of {cap_bytes // MIB} MiB, "
                             "and nothing killed it (is Ray's memory monitor on? RAY_memory_usage_threshold)")


def fault_env(rules: str) -> dict[str, str]:
    """The environment variables that install RULES in the trials of a command."""
    parse_rules(rules)  # a malformed rule fails here, not in every trial
    return {TRIAL_HOOK_ENV: HOOK, FAULTS_ENV: rules}


def oom_env(rules: str, cap_mib: int = 8192) -> dict[str, str]:
    """The environment variables that make the trials RULES pick grow until killed."""
    parse_rules(rules)
    return {TRIAL_HOOK_ENV: OOM_HOOK, OOM_ENV: rules, OOM_CAP_ENV: str(cap_mib)}
