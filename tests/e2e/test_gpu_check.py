"""benchmarks/gpu_check.py gets one short run on a lent GPU: its smoke mode runs every line of it on
this CPU first (the shallow model in place of the 7B, gloo in place of NCCL)."""

import json
import os
import subprocess
import sys

import pytest

from checkout import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_the_gpu_check_runs_end_to_end_in_smoke_mode(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"OMP_NUM_THREADS": "1"}
    script = [sys.executable, "benchmarks/gpu_check.py"]
    prepared = subprocess.run([*script, "prepare", "--no-wheels", "--out", str(tmp_path / "prepared")], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    command = [*script, "run", "--smoke", "--from", str(tmp_path / "prepared"), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [row["micro_batch"] for row in results["memory"]] == [1, 8]
    assert {(r["connector"], r["batch"]) for r in results["prefill"]} >= {("MLP", 1), ("MQT", 8)}
    loop = results["torchrun"]
    assert loop["returncode"] == 0 and loop["finite"] and loop["falling"] and len(loop["losses"]) >= 20
