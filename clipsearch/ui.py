"""`clipsearch ui`: the MLflow UI over the project's tracking store and optuna-dashboard over
the phases' Optuna studies, started as child processes, stopped together.

The tools are the field's own (`mlflow ui`, `optuna-dashboard`); this module only decides what
to start, checks it can before starting anything, and looks after the children. An experiment
keeps its Optuna studies, one per phase, in one storage (results/EXP/optuna.db, or the
--optuna-storage its phases name in phase.json) and optuna-dashboard serves one storage, so each
experiment gets one dashboard, on successive ports; a phase run before that kept its own
results/EXP/PHASE/optuna.db, which gets a dashboard of its own.

Everything binds to 127.0.0.1 unless --host says otherwise: both UIs let a visitor read every
run, and MLflow's lets them delete runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .results import OPTUNA_DB, PHASE_JSON, phase_study
from .tracking import default_tracking_uri

READY_TIMEOUT_S = 120  # mlflow ui on a cold sqlite store takes ~7-17 s on a busy 2-core machine
STOP_TIMEOUT_S = 15


@dataclass
class Service:
    """One child process and where users reach it."""

    name: str
    argv: list[str]
    host: str
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


# ------------------------------------------------------------------------------ what to start

def plan_services(results: Path, name: str | None, tracking_uri: str | None, host: str, port: int,
                  optuna_port: int) -> tuple[list[Service], list[str]]:
    """The services to start, and lines to print about stores nothing needs starting for.
    InputError when a store is missing or a port is taken: nothing has started yet."""
    uri = tracking_uri or default_tracking_uri(results)
    services, notes = [], []
    if uri.startswith(("http://", "https://")):
        notes.append(f"MLflow: {uri} (a tracking server already: open it there)")
    else:
        _check_store(uri, tracking_uri is None)
        services.append(_mlflow_ui(uri, host, port))
    storages = study_storages(results, name)
    services += [_optuna_dashboard(storage, host, optuna_port + i) for i, storage in enumerate(storages)]
    if not storages:
        notes.append(f"Optuna: no study under {results}/{name or '*'} yet (phases 1 and 3 write one, in "
                     f"{results}/EXP/optuna.db)")
    for service in services:
        _check_port(service)
    return services, notes


def _check_store(uri: str, default: bool) -> None:
    if not uri.startswith("sqlite:///"):
        return  # a database server: mlflow ui reports it if unreachable
    path = Path(uri[len("sqlite:///"):])
    if not path.is_file():
        fix = "run a search first (e.g. clipsearch phase1 --quick) or pass --tracking-uri"
        raise InputError("no MLflow store", where=str(path) if not default else f"{path} (the default store)", fix=fix)


def study_storages(results: Path, name: str | None) -> list[str]:
    """The Optuna storage of experiment `name`, or of every experiment (results/EXP/optuna.db,
    or the storage its phases' phase.json name), and the own optuna.db of each phase run before
    the experiment had one storage; as optuna-dashboard takes them (a database URL or a journal
    file's path), each once."""
    if name is not None and not (results / name).is_dir():
        known = sorted(p.name for p in results.glob("*/") if p.is_dir()) if results.is_dir() else []
        raise InputError(f"no experiment {name!r}", where=str(results / name),
                         fix=f"give one of {', '.join(known)}" if known else "run a search first")
    found: list[str] = []
    for exp in sorted(p for p in results.glob(name or "*") if p.is_dir()):
        named = [study[0] for study in map(_phase_study, _phase_dirs(exp)) if study is not None]
        files = [exp / OPTUNA_DB, *sorted(exp.glob(f"*/{OPTUNA_DB}")), *sorted(exp.glob(f"*/*/{OPTUNA_DB}"))]
        for storage in [*named, *(f"sqlite:///{f.resolve()}" for f in files)]:
            if storage not in found and _exists(storage):
                found.append(storage)
    return found


def _phase_dirs(exp: Path) -> list[Path]:
    """The phase folders of an experiment (classify's methods one level further down)."""
    return sorted({p.parent for pattern in (f"*/{PHASE_JSON}", f"*/*/{PHASE_JSON}") for p in exp.glob(pattern)})


def _phase_study(phase_dir: Path) -> tuple[str, str] | None:
    try:
        return phase_study(phase_dir)
    except InputError:  # an unreadable phase.json: its study is not shown, the others are
        return None


def _exists(storage: str) -> bool:
    """A file storage that is there (a database server: assumed so; the dashboard says if not)."""
    if storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///"):]).is_file()
    return "://" in storage or Path(storage).is_file()


def _mlflow_ui(uri: str, host: str, port: int) -> Service:
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port),
            "--workers", "1"]
    # a viewer needs no job runner; without it the UI is up in ~7 s instead of ~17 s
    return Service("MLflow UI", argv, host, port, {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


def _optuna_dashboard(storage: str, host: str, port: int) -> Service:
    executable = Path(sys.executable).with_name("optuna-dashboard")
    argv = [str(executable), storage, "--host", host, "--port", str(port), "--quiet"]
    return Service(f"Optuna dashboard ({_label(storage)})", argv, host, port)


def _label(storage: str) -> str:
    """How the dashboard's line names its storage: a file relative to here where it can be, a
    database URL without its password."""
    path = Path(storage[len("sqlite:///"):]) if storage.startswith("sqlite:///") else None
    if path is None and "://" not in storage:
        path = Path(storage)
    if path is not None:
        with contextlib.suppress(ValueError):
            return str(path.relative_to(Path.cwd().resolve()))
        return str(path)
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", storage)


def _check_port(service: Service) -> None:
    with socket.socket(socket.AF_INET6 if ":" in service.host else socket.AF_INET) as probe:
        try:
            probe.bind((service.host, service.port))
        except OSError as exc:
            what = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            option = "--port" if service.name == "MLflow UI" else "--optuna-port"
            raise InputError(f"port {service.port} on {service.host} {what}", where=option,
                             fix=f"give a free port with {option}, or another --host") from None


# ------------------------------------------------------------------------------ running them

class Stop(Exception):
    """SIGTERM arrived: stop the children as Ctrl-C would."""


def serve(services: list[Service], notes: list[str]) -> int:
    """Start every service, print its URL once it answers, wait for Ctrl-C or SIGTERM (exit 0)
    or for a child to die (exit 1); the children are stopped in every case."""
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    # Ctrl-C raises KeyboardInterrupt even when clipsearch was started with SIGINT ignored (as
    # `cmd &` in a script without job control starts it): otherwise it could not be stopped so
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    procs: list[subprocess.Popen] = []
    try:
        for service in services:
            procs.append(_start(service))  # appended one by one: a failed start still stops the others
        for service, proc in zip(services, procs):
            _wait_ready(service, proc)
            print(f"{service.name}: {service.url}", flush=True)
        for note in notes:
            print(note, flush=True)
        print("Ctrl-C stops them.", file=sys.stderr, flush=True)
        return _watch(services, procs)
    except (KeyboardInterrupt, Stop):
        return 0
    finally:
        _stop_all(procs)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def _raise_stop(_signum, _frame) -> None:
    raise Stop


def _start(service: Service) -> subprocess.Popen:
    # a session of its own: Ctrl-C in the terminal reaches only clipsearch, which stops each
    # child's whole group (mlflow ui runs its server in worker processes)
    return subprocess.Popen(service.argv, env={**os.environ, **service.env}, stdin=subprocess.DEVNULL,
                            stdout=sys.stderr, start_new_session=True)


def _wait_ready(service: Service, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceDied(f"{service.name} exited with code {proc.returncode} before answering on {service.url}")
        if _answers(service.host, service.port):
            return
        time.sleep(0.3)
    raise ServiceDied(f"{service.name} did not answer on {service.url} within {READY_TIMEOUT_S} s")


class ServiceDied(RuntimeError):
    """A dashboard would not start or stopped by itself."""


def _answers(host: str, port: int) -> bool:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    with socket.socket(socket.AF_INET6 if ":" in target else socket.AF_INET) as probe:
        probe.settimeout(1)
        return probe.connect_ex((target, port)) == 0


def _watch(services: list[Service], procs: list[subprocess.Popen]) -> int:
    while True:
        for service, proc in zip(services, procs):
            if proc.poll() is not None:
                print(f"clipsearch: error: {service.name} stopped (exit code {proc.returncode}); stopping the others",
                      file=sys.stderr)
                return 1
        time.sleep(0.5)


def _stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each child's process group, SIGKILL to what is left after STOP_TIMEOUT_S."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
    try:
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in procs:
            _signal_group(proc, signal.SIGKILL)  # workers a server left behind, if any
            proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
