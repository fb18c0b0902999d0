"""One driver per experiment (clipsearch.tune.driver_lock): a second phase command (or --resume)
while a driver runs the experiment is one line and exit 2, before anything is read or written;
the lock is the kernel's (flock), so a driver killed with SIGKILL leaves it free. No Ray trial:
the running driver is a child process holding the lock through the same API."""

import os
import signal
import subprocess
import sys
import time

import pytest

from clipsearch.errors import InputError
from clipsearch.results import write_json
from clipsearch.tune.driver_lock import ExperimentLock, experiment_lock
from clipsearch.tune.phases import Options, prepare

from .helpers import ENV, write_space
from .test_cli import TINY, invoke

HOLDER = ("import sys\n"
          "from clipsearch.tune.driver_lock import ExperimentLock\n"
          "lock = ExperimentLock(sys.argv[1])\n"
          "sys.argv = ['clipsearch', 'phase1', '--name', 'exp']\n"  # what the lock file names
          "lock.take()\n"
          "print('held', flush=True)\n"
          "sys.stdin.read()\n")  # holds it until its stdin closes, or it is killed


@pytest.fixture
def holder(tmp_path):
    """Start a process holding results/exp's lock, as a running driver does; yields a function
    that starts it and returns the process (killed at the end of the test)."""
    started = []

    def start(exp_dir):
        child = subprocess.Popen([sys.executable, "-c", HOLDER, str(exp_dir)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=ENV)
        started.append(child)
        assert child.stdout.readline().strip() == "held"
        return child

    yield start
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()


def snapshot(folder):
    """Every file under `folder` with its bytes and mtime, every folder by name."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def started_phase(tmp_path):
    """results/exp/phase1 as a running driver has it: phase.json (not finished) in its folder."""
    results = tmp_path / "results"
    plan = prepare("phase1", Options(name="exp", space=write_space(tmp_path, "space.yaml", TINY), results=results))
    plan.phase_dir.mkdir(parents=True)
    write_json(plan.phase_dir / "phase.json", plan.state)
    return results


@pytest.mark.census("two drivers")
@pytest.mark.parametrize("args", [["phase1", "--space", "space.yaml"], ["phase1", "--resume"],
                                  ["phase1", "--resume", "--num-samples", "5"], ["protocol", "--quick"],
                                  ["protocol", "--quick", "--resume"]])
def test_a_second_driver_is_one_line_exit_2_and_touches_nothing(in_tmp, monkeypatch, capsys, holder, args):
    import ray

    results = started_phase(in_tmp)
    first = holder(results / "exp")
    before = snapshot(results)
    capsys.readouterr()  # what laying the phase down printed
    code, out = invoke(monkeypatch, capsys, *args, "--name", "exp")
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in out.err, out.err
    assert lines[0] == (f"clipsearch: error: {results.resolve() / 'exp' / 'driver.lock'}: another clipsearch driver "
                        f"is running experiment 'exp' (pid {first.pid} on {os.uname().nodename}: clipsearch "
                        f"phase1); fix: wait for it to end, or stop it (its lock goes with its process); to run "
                        f"beside it, choose another --name")
    assert snapshot(results) == before and out.out == ""  # no folder, phase.json, optuna.db or mlflow.db
    assert not ray.is_initialized()


@pytest.mark.census("two drivers")
def test_a_driver_killed_with_sigkill_leaves_the_lock_free(tmp_path, holder):
    exp_dir = tmp_path / "results" / "exp"
    first = holder(exp_dir)
    with pytest.raises(InputError, match=f"another clipsearch driver is running experiment 'exp' \\(pid {first.pid} "):
        ExperimentLock(exp_dir).take()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    with experiment_lock(exp_dir) as lock:  # the file it left is there, and free
        assert lock.held
        assert (exp_dir / "driver.lock").read_text().startswith(f"pid {os.getpid()} on ")


@pytest.mark.census("two drivers")
def test_of_two_drivers_started_together_the_second_to_write_is_refused(tmp_path):
    exp_dir = tmp_path / "results" / "exp"
    with experiment_lock(exp_dir) as first, experiment_lock(exp_dir) as second:
        # neither found a lock file: both checked their inputs, writing nothing
        assert not exp_dir.exists() and not first.held and not second.held
        first.take()
        with pytest.raises(InputError, match="another clipsearch driver is running experiment 'exp'"):
            second.take()
        assert first.held and not second.held
    with experiment_lock(exp_dir) as third:  # the first's block has ended: its lock is gone with it
        assert third.held


@pytest.mark.census("two drivers")
def test_a_driver_that_ends_frees_the_lock_for_the_next_and_the_file_stays(tmp_path, holder):
    exp_dir = tmp_path / "results" / "exp"
    first = holder(exp_dir)
    first.stdin.close()  # its work done: it exits normally
    assert first.wait(timeout=10) == 0
    lock = ExperimentLock(exp_dir)
    lock.check()
    assert lock.held and (exp_dir / "driver.lock").is_file()
    lock.release()
    assert (exp_dir / "driver.lock").is_file()  # never deleted (see driver_lock: a new inode would let two run)


@pytest.mark.census("two drivers")
def test_the_lock_is_not_inherited_by_what_the_driver_starts(tmp_path):
    exp_dir = tmp_path / "results" / "exp"
    with experiment_lock(exp_dir) as lock:
        lock.take()
        # a process the driver starts (Ray's raylet, a dashboard) outliving it must not keep the lock
        child = subprocess.Popen([sys.executable, "-c", "print('up', flush=True); import sys; sys.stdin.read()"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, close_fds=False)
        assert child.stdout.readline().strip() == "up"  # past its exec, which closes what it does not inherit
    try:
        with experiment_lock(exp_dir) as after:
            after.take()
            assert after.held
    finally:
        child.stdin.close()
        child.wait()


def test_a_bad_input_writes_no_lock_file(in_tmp, monkeypatch, capsys):
    write_space(in_tmp, "space.yaml", TINY)
    code, out = invoke(monkeypatch, capsys, "phase1", "--space", "space.yaml", "--name", "exp",
                       "--set", "train.nope=1")
    assert code == 2 and "train.nope" in out.err
    assert not (in_tmp / "results").exists()


def test_the_lock_file_names_the_driver_but_none_of_its_options(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["clipsearch", "phase1", "--optuna-storage", "postgresql://me:secret@db/optuna",
                                      "--name", "exp"])
    exp_dir = tmp_path / "exp"
    with experiment_lock(exp_dir) as lock:
        lock.take()
        assert (exp_dir / "driver.lock").read_text() == f"pid {os.getpid()} on {os.uname().nodename}: clipsearch phase1\n"
