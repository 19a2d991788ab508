"""benchmarks/gpu_check.py gets one short run on a lent GPU: its dry run (--tiny) runs its parts on
this CPU first (the shallow model in place of the 7B, gloo in place of NCCL), and its results file is
checked part by part. The torchrun part runs here, from the repository; the inference, memory and
import parts run in tests/e2e/test_gpu_check_bundle.py, from the carried bundle, as the device runs
them."""

import json
import os
import subprocess
import sys

import pytest

from checkout import REPO_ROOT

pytestmark = pytest.mark.e2e

SCRIPT = [sys.executable, "benchmarks/gpu_check.py"]


def environment():
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"OMP_NUM_THREADS": "1"}


def gpu_check(*args, timeout=900):
    return subprocess.run(
        [*SCRIPT, *args], cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=timeout
    )


def test_the_dry_run_trains_under_torchrun_with_deepspeed_set_up_for_the_device(tmp_path):
    prepared = gpu_check("prepare", "--no-wheels", "--out", str(tmp_path / "prepared"), timeout=600)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    done = gpu_check(
        "run", "--tiny", "--parts", "env,torchrun", "--from", str(tmp_path / "prepared"), "--out", str(tmp_path / "out")
    )
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert done.returncode == 0, done.stdout[-2000:] + log[-6000:]
    parts = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["parts"]
    assert list(parts) == ["env", "torchrun"]
    assert all(p["status"] == "ok" and p["error"] is None for p in parts.values()), parts

    assert parts["env"]["deepspeed_accelerator"] == "cpu" and parts["env"]["cuda_available"] is False

    # Read inside the rank after DeepSpeed's set-up, not from the configuration.
    rank, loop = parts["torchrun"]["rank"], parts["torchrun"]["loop"]
    assert rank["deepspeed_accelerator"] == rank["strategy_accelerator"] == "cpu" and rank["engine_device"] == "cpu"
    assert rank["dist_backend"] == "gloo" and rank["parameter_devices"] == ["cpu"] and rank["on_gpu"] is False
    assert loop["returncode"] == 0 and loop["finite"] and loop["falling"] and len(loop["losses"]) >= 20


def test_a_part_out_of_time_is_recorded_and_the_next_still_runs(tmp_path):
    done = gpu_check(
        "run", "--tiny", "--parts", "memory,env", "--limit", "memory=2", "--out", str(tmp_path), timeout=300
    )
    assert done.returncode == 1, done.stdout + done.stderr
    parts = json.loads((tmp_path / "gpu_check.json").read_text())["parts"]
    assert parts["memory"]["status"] == "timeout" and "2 s" in parts["memory"]["error"]
    assert parts["env"]["status"] == "ok" and parts["env"]["deepspeed_accelerator"] == "cpu"
