"""The faults tests inject through the trial hook: which trials a rule picks, when they fail, and\nhow a trial made to run out of memory grows."""

import re

import pytest

from clipsearch.bench.faults import (FAULTS_ENV, HOOK, InjectedFault, MemoryNotReclaimed, exhaust_memory, fault_env,
                                     inject, oom_env, parse_rules)
from clipsearch.tune.trial_hook import TRIAL_HOOK_ENV, load_epoch_hook


def test_fault_rules_pick_trials_by_config_and_fail_after_the_epoch(monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "optimizer.name=radam@1;train.epochs=1@0")
    radam = {"optimizer.name": "radam", "train.epochs": 2}
    inject(radam, 1)
    with pytest.raises(InjectedFault, match="epoch 2"):
        inject(radam, 2)
    with pytest.raises(InjectedFault):
        inject({"optimizer.name": "adamw", "train.epochs": 1}, 1)
    inject({"optimizer.name": "adamw", "train.epochs": 2}, 5)  # no rule matches


def test_a_trial_follows_the_first_rule_it_matches_and_star_matches_any(monkeypatch):
    monkeypatch.setenv(FAULTS_ENV, "loss.name=*@3;optimizer.name=radam@0")
    inject({"optimizer.name": "radam", "loss.name": "sogclr"}, 3)  # the first rule: not before epoch 4
    with pytest.raises(InjectedFault, match="loss.name"):
        inject({"optimizer.name": "radam"}, 4)


@pytest.mark.parametrize("rule", ["optimizer.name=radam", "optimizer.name@1", "=radam@1", "optimizer.name=radam@x"])
def test_a_malformed_rule_is_refused_by_name(rule):
    with pytest.raises(ValueError, match="KEY=VALUE@EPOCH"):
        fault_env(rule)


def test_fault_env_installs_the_hook_the_trainable_loads(monkeypatch):
    env = fault_env("train.epochs=1@0")
    assert env == {TRIAL_HOOK_ENV: HOOK, FAULTS_ENV: "train.epochs=1@0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_epoch_hook() is inject
    assert [r.after for r in parse_rules(env[FAULTS_ENV])] == [0]


@pytest.mark.census("out of memory")
def test_an_oom_rule_grows_its_trial_resident_until_its_cap(monkeypatch):
    """In-process, with no monitor to kill it: the hook holds written (resident) memory up to its
    cap, then gives it back and says nothing killed it; trials the rule does not pick, or before
    its epoch, are left alone."""
    for key, value in oom_env("optimizer.name=radam@1", cap_mib=128).items():
        monkeypatch.setenv(key, value)
    assert load_epoch_hook() is exhaust_memory
    exhaust_memory({"optimizer.name": "adamw"}, 5)
    exhaust_memory({"optimizer.name": "radam"}, 1)
    with pytest.raises(MemoryNotReclaimed, match="cap of 128 MiB, and nothing killed it") as caught:
        exhaust_memory({"optimizer.name": "radam"}, 2)
    grown = int(re.search(r"grew by (\d+) MiB", str(caught.value)).group(1))
    assert grown >= 100  # pages written, not just reserved
