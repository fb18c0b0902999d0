"""Trial faults for tests and the reliability bench, installed from outside the trainable as its
epoch hook (clipsearch.tune.trial_hook).

CLIPSEARCH_FAULTS="KEY=VALUE@EPOCH" (several rules joined by ';') makes every trial whose config
has KEY == VALUE (VALUE * matches any) raise InjectedFault once it has trained past EPOCH,
before reporting that epoch: every attempt fails the same way after resuming from the
checkpoint of EPOCH. A trial follows the first rule its config matches. `fault_env(rules)` is
what a command's environment needs for it: the hook and the rules; the workers of a local Ray
cluster inherit both from the driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..tune.trial_hook import TRIAL_HOOK_ENV

FAULTS_ENV = "CLIPSEARCH_FAULTS"
HOOK = "clipsearch.bench.faults:inject"


class InjectedFault(RuntimeError):
    """The failure a rule of CLIPSEARCH_FAULTS injects."""


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


def inject(values: dict[str, Any], epoch: int) -> None:
    """The epoch hook: raise InjectedFault if the first rule this trial's config matches says
    it has trained past its epoch."""
    rule = next((r for r in parse_rules(os.environ.get(FAULTS_ENV, "")) if r.matches(values)), None)
    if rule is not None and epoch > rule.after:
        raise InjectedFault(f"{FAULTS_ENV} rule {rule.text!r}: injected failure at epoch {epoch}")


def fault_env(rules: str) -> dict[str, str]:
    """The environment variables that install RULES in the trials of a command."""
    parse_rules(rules)  # a malformed rule fails here, not in every trial
    return {TRIAL_HOOK_ENV: HOOK, FAULTS_ENV: rules}
