"""The trial hook: none unless named, the named function, and a bad name as one line before Ray
starts."""

import pytest

from clipsearch.errors import InputError
from clipsearch.tune.trial_hook import TRIAL_HOOK_ENV, load_epoch_hook

from .helpers import run_cli


def test_no_hook_unless_one_is_named(monkeypatch):
    monkeypatch.delenv(TRIAL_HOOK_ENV, raising=False)
    assert load_epoch_hook() is None


def test_the_named_function_is_the_hook(monkeypatch):
    monkeypatch.setenv(TRIAL_HOOK_ENV, "os.path:join")
    import os.path

    assert load_epoch_hook() is os.path.join


@pytest.mark.parametrize("spec, said", [("no_colon", "package.module:function"),
                                        ("no_such_module_here:f", "cannot import"),
                                        ("os.path:no_such_function", "no function")])
def test_a_bad_hook_is_one_input_error_naming_the_variable(monkeypatch, spec, said):
    monkeypatch.setenv(TRIAL_HOOK_ENV, spec)
    with pytest.raises(InputError, match=said) as caught:
        load_epoch_hook()
    assert caught.value.one_line().startswith(f"{TRIAL_HOOK_ENV}: ") and "fix:" in caught.value.one_line()


def test_a_bad_hook_stops_a_phase_before_ray_starts_with_one_line(tmp_path):
    out = run_cli("phase1", "--quick", "--name", "x", cwd=tmp_path, env={TRIAL_HOOK_ENV: "no_such_module_here:f"},
                  timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert TRIAL_HOOK_ENV in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "results" / "x" / "phase1").exists()
