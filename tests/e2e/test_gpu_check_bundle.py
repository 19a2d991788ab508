"""The GPU check's carried bundle is complete: installed the way the device command installs it, into
an empty virtual environment that holds only what the device image has, the GPU path imports and the
check's parts run (at toy shapes, on this CPU). The device image's torch 2.11 is not on this machine:
the environment takes the local torch 2.13.0 in its place, and the device's transformers 5.17.0.

About 5 minutes on two shared cores (310 s measured): the environment (torch from the local wheel),
the bundle (~30 s), the imports and four parts at toy shapes (~2 min)."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from checkout import REPO_ROOT

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from gpu_check import BUNDLE_LIMIT, DEVICE_IMAGE  # noqa: E402

DEVICE_PYTHON = "3.12"  # the device's (KINDS.md): what the bundle's requirements are read for


def wheel_requirements(wheel: Path) -> tuple[str, list[Requirement]]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(name).decode().splitlines()
    project = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Name:"))
    return project, [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]


def unmet_requirements(wheels: list[Path]) -> list[str]:
    """Each bundled wheel's requirements on the device (Python 3.12), against the bundle itself and the
    device image's packages (at the version seen there where the image's list gives one)."""
    available = {}
    for item in DEVICE_IMAGE:
        requirement = Requirement(item)
        pinned = [s.version for s in requirement.specifier if s.operator == "=="]
        available[canonicalize_name(requirement.name)] = pinned[0] if pinned else None
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        available[canonicalize_name(name)] = version
    environment = default_environment() | {"python_version": DEVICE_PYTHON, "python_full_version": "3.12.3"}
    unmet = []
    for wheel in wheels:
        project, requirements = wheel_requirements(wheel)
        if canonicalize_name(project) == "mqt-llava":
            continue  # its cluster-side dependencies (Ray, MLflow) are not on the GPU path: the imports show it
        for requirement in requirements:
            if requirement.marker is not None and not requirement.marker.evaluate(environment | {"extra": ""}):
                continue
            version = available.get(canonicalize_name(requirement.name), "absent")
            if version == "absent" or (version is not None and not requirement.specifier.contains(version, True)):
                unmet.append(f"{project} needs {requirement}: the device has {version}")
    return unmet


def run(command, **kwargs):
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command[:4]}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_bundle_installs_with_no_index_and_the_check_runs_on_what_the_device_has(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env |= {"OMP_NUM_THREADS": "1", "PIP_CONSTRAINT": str(REPO_ROOT / "constraints.txt")}
    local = f"{sys.version_info.major}.{sys.version_info.minor}"  # binary wheels for the Python here
    run(
        [
            sys.executable,
            "benchmarks/gpu_check.py",
            "prepare",
            "--no-shards",
            "--python-version",
            local,
            "--out",
            str(tmp_path / "prepared"),
        ],
        cwd=REPO_ROOT,
        env=env,
        timeout=900,
    )
    wheels = sorted((tmp_path / "prepared" / "wheels").glob("*.whl"))
    names = {canonicalize_name(w.name.split("-")[0]) for w in wheels}
    assert {"mqt-llava", "deepspeed", "pydantic", "pydantic-core", "transformers"} <= names
    assert sum(w.stat().st_size for w in wheels) < BUNDLE_LIMIT / 2  # half the call: the tree and shards travel too
    assert unmet_requirements(wheels) == []

    # The stand-in for the device image: an empty environment, then only packages the image lists.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    python = str(venv / "bin" / "python")
    image = [item.partition("==")[0] for item in DEVICE_IMAGE if not item.startswith(("torch", "transformers"))]
    (tmp_path / "image.txt").write_text("torch==2.13.0\ntransformers==5.17.0\n")
    run(
        [python, "-m", "pip", "install", "-q", "torch==2.13.0", "transformers==5.17.0", *image],
        env=env | {"PIP_CONSTRAINT": str(tmp_path / "image.txt")},
        timeout=900,
    )
    # The device command's install, word for word (benchmarks/gpu_check.py, docs/benchmarks.md).
    site = tmp_path / "site"
    run(
        [
            python,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--target",
            str(site),
            *map(str, wheels),
        ],
        env=env,
        timeout=600,
    )

    there = env | {"PYTHONPATH": str(site)}
    script = str(REPO_ROOT / "benchmarks" / "gpu_check.py")
    where = run(
        [python, "-c", "import mqt_llava, transformers; print(mqt_llava.__file__, transformers.__version__)"],
        cwd=tmp_path,
        env=there,
    ).stdout.split()
    assert where[0].startswith(str(site)) and where[1] == "5.23.0"  # the bundle's, not the repository's or the image's
    loaded = json.loads(run([python, script, "imports"], cwd=tmp_path, env=there, timeout=300).stdout.splitlines()[-1])
    assert {"deepspeed", "mqt_llava", "pydantic", "transformers", "pyarrow"} <= set(loaded)
    assert not {"ray", "mlflow"} & set(loaded)

    # Every part but torchrun (whose imports `imports` covers; its DeepSpeed comm op would be compiled
    # here; tests/e2e/test_gpu_check.py runs it) runs from the bundle at toy shapes, each checked.
    done = subprocess.run(
        [
            python,
            script,
            "run",
            "--tiny",
            "--parts",
            "env,inference,memory,import",
            "--from",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        env=there,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert done.returncode == 0, done.stdout[-2000:] + log[-6000:]
    parts = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["parts"]
    assert list(parts) == ["env", "inference", "memory", "import"]
    assert all(p["status"] == "ok" and p["error"] is None for p in parts.values()), parts
    assert parts["env"]["versions"]["torch"].startswith("2.13.0")

    inference = parts["inference"]
    assert inference["model"]["parameter_dtypes"] == ["bfloat16"]
    generated = {(r["connector"], r["visual_tokens"], r["batch"]) for r in inference["generate"]}
    assert generated == {("MQT", 16, 1), ("MQT", 16, 8), ("MLP", 64, 1), ("MLP", 64, 8)}  # 64: the toy tower's grid
    assert all(r["tokens_per_s"] > 0 and r["new_tokens"] == 4 for r in inference["generate"])
    assert {(r["connector"], r["batch"]) for r in inference["prefill"]} >= {("MLP", 1), ("MQT", 8)}

    steps = parts["memory"]["steps"]
    assert [s["micro_batch"] for s in steps] == [1, 8] and all(s["loss"] > 0 for s in steps)

    imported = parts["import"]
    keys = imported["keys"]
    assert not (keys["llama_missing"] or keys["llama_wrong_shape"] or keys["llama_unequal"])
    assert keys["connector_consumed"] and keys["connector_values"][0] == keys["connector_values"][1]
    assert imported["forward"]["finite"] and imported["checkpoint"]["keys"] == 3 + 2 * 9 + 13  # 2 Llama layers
