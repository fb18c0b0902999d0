"""`clipsearch ui` over a finished quick phase: the MLflow UI and an optuna-dashboard per study
start, listen on loopback only, serve the phase (headless Chromium renders the MLflow page
with the parent run and its child runs), and all stop on SIGTERM. A missing store or a taken
port is the one-line exit-2 error, with nothing started."""

from __future__ import annotations

import html
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from clipsearch.bench.local_cluster import free_ports, processes_mentioning
from clipsearch.ui import STOP_TIMEOUT_S
from tests.tune.helpers import ENV

# the children get STOP_TIMEOUT_S to stop before SIGKILL; the rest is margin for a busy 2-core machine
STOPPED_WITHIN_S = STOP_TIMEOUT_S + 45


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def ui_command(*args) -> list[str]:
    return [sys.executable, "-m", "clipsearch.cli", "ui", *map(str, args)]


@pytest.fixture(scope="module")
def finished(finished_quick_phase) -> Path:
    """A finished quick phase 1 (two 1-epoch trials on 5% of the pairs), as a user leaves it
    (the suite's one, tests/conftest.py)."""
    return finished_quick_phase[0]


@pytest.fixture(scope="module")
def ui(finished):
    mlflow_port, optuna_port = free_ports(2)
    proc = subprocess.Popen(ui_command("--port", mlflow_port, "--optuna-port", optuna_port), cwd=finished, env=ENV,
                            stdout=subprocess.PIPE, stderr=(finished / "ui.log").open("w"), text=True)
    urls = {}
    try:
        while len(urls) < 2:
            line = proc.stdout.readline()
            assert line, f"clipsearch ui ended early:\n{(finished / 'ui.log').read_text()[-3000:]}"
            label, _, url = line.strip().rpartition(": ")
            urls[label] = url
        yield {"proc": proc, "urls": urls, "mlflow": f"http://127.0.0.1:{mlflow_port}", "ports": (mlflow_port, optuna_port)}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port` (Linux /proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]) if len(address) == 8
                          else address)
    return found


def api(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base}/ajax-api/2.0/mlflow/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_it_prints_both_urls_on_loopback(ui, finished):
    mlflow_port, optuna_port = ui["ports"]
    assert ui["urls"] == {"MLflow UI": f"http://127.0.0.1:{mlflow_port}",
                          f"Optuna dashboard (results/demo/optuna.db)": f"http://127.0.0.1:{optuna_port}"}
    assert listening_addresses(mlflow_port) == {"127.0.0.1"}
    assert listening_addresses(optuna_port) == {"127.0.0.1"}


def test_optuna_dashboard_serves_the_phase1_study(ui):
    with urllib.request.urlopen(f"{ui['urls']['Optuna dashboard (results/demo/optuna.db)']}/api/studies",
                                timeout=30) as response:
        studies = json.loads(response.read())["study_summaries"]
    assert [s["study_name"] for s in studies] == ["demo-phase1"]


def phase_runs(base: str) -> tuple[str, dict, list[dict]]:
    """The experiment id, the phase's parent run and its child runs, from the REST API the page uses."""
    with urllib.request.urlopen(f"{base}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=demo",
                                timeout=30) as response:
        exp = json.loads(response.read())["experiment"]["experiment_id"]
    runs = api(base, "runs/search", {"experiment_ids": [exp], "max_results": 100})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    parent = next(r for r, t in zip(runs, tags) if t.get("mlflow.runName") == "phase1")
    children = [r for r, t in zip(runs, tags) if t.get("mlflow.parentRunId") == parent["info"]["run_id"]]
    return exp, parent, children


def chromium(*args, profile: Path) -> str:
    """Headless Chromium on a page of the JS app, once its requests have settled."""
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=30000",
                           "--window-size=1280,760", *args], capture_output=True, text=True, timeout=180)
    return done.stdout


def page_text(dom: str) -> str:
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium on PATH (apt-get install chromium)")
def test_the_mlflow_page_shows_the_phase_with_its_trial_runs(ui, tmp_path):
    exp, parent, children = phase_runs(ui["mlflow"])  # what the page asks the server for
    assert len(children) == 2
    # the parent run's page, in MLflow 3's "Model training" view (its default is GenAI)
    page = f"{ui['mlflow']}/#/experiments/{exp}/runs/{parent['info']['run_id']}?workflowType=machine_learning"
    text = page_text(chromium("--dump-dom", page, profile=tmp_path / "profile"))
    assert re.search(r"\bphase1 Overview\b", text)  # the run's title
    listed = re.search(r"Child runs (.*?) Source", text).group(1)
    assert sorted(name.strip() for name in listed.split(",")) == sorted(c["info"]["run_name"] for c in children)
    shot = tmp_path / "mlflow_ui.png"  # docs/mlflow_ui.png is one of these
    chromium(f"--screenshot={shot}", page, profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 20_000 < shot.stat().st_size < 400_000


def test_sigterm_stops_it_and_its_children(ui, finished):
    assert len(processes_mentioning(str(finished / "results"))) >= 2  # mlflow ui, optuna-dashboard
    proc = ui["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOPPED_WITHIN_S) == 0
    assert processes_mentioning(str(finished / "results")) == []
    for port in ui["ports"]:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing answers


def test_a_missing_store_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(ui_command(), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no MLflow store" in lines[0] and "mlflow.db" in lines[0] and "fix:" in lines[0]


def test_a_taken_port_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mlflow.db").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(ui_command("--port", port), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"clipsearch: error: --port: port {port} on 127.0.0.1 is in use; fix: give a free port with --port, "
        "or another --host"]


def lay_down_stores(root: Path) -> Path:
    results = root / "results"
    for phase in ("exp/phase1", "exp/phase3", "other/phase1"):
        (results / phase).mkdir(parents=True)
        (results / phase / "optuna.db").touch()
    (results / "mlflow.db").touch()
    return results


def test_one_dashboard_per_study_database_on_successive_ports(tmp_path):
    from clipsearch.ui import plan_services

    results = lay_down_stores(tmp_path)
    services, notes = plan_services(results, "exp", None, "127.0.0.1", 5000, 8080)
    assert [(s.name.split(" (")[0], s.port) for s in services] == [
        ("MLflow UI", 5000), ("Optuna dashboard", 8080), ("Optuna dashboard", 8081)]
    assert services[1].argv[1] == f"sqlite:///{results / 'exp' / 'phase1' / 'optuna.db'}" and notes == []
    every, _ = plan_services(results, None, None, "127.0.0.1", 5000, 8080)
    assert len(every) == 4  # without --name: every experiment's studies


def test_a_tracking_server_is_pointed_to_not_started(tmp_path):
    from clipsearch.ui import plan_services

    services, notes = plan_services(lay_down_stores(tmp_path), "other", "http://mlflow:5000", "127.0.0.1", 5000, 8080)
    assert [s.name.split(" (")[0] for s in services] == ["Optuna dashboard"]
    assert notes == ["MLflow: http://mlflow:5000 (a tracking server already: open it there)"]


def test_an_unknown_experiment_is_one_line_and_exit_2(tmp_path):
    lay_down_stores(tmp_path)
    done = subprocess.run(ui_command("--name", "nope"), cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"clipsearch: error: {Path('results') / 'nope'}: no experiment 'nope'; fix: give one of exp, other"]


@pytest.mark.slow
def test_ctrl_c_stops_it_and_its_children(finished):
    mlflow_port, optuna_port = free_ports(2)
    proc = subprocess.Popen(ui_command("--port", mlflow_port, "--optuna-port", optuna_port), cwd=finished, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == f"MLflow UI: http://127.0.0.1:{mlflow_port}"
        assert proc.stdout.readline().strip().endswith(f"http://127.0.0.1:{optuna_port}")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(STOPPED_WITHIN_S) == 0
        assert processes_mentioning(f"--port {mlflow_port}") == processes_mentioning(f"--port {optuna_port}") == []
    finally:
        if proc.poll() is None:
            proc.kill()
