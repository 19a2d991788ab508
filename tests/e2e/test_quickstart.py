"""The main job, run as a user runs it: a subprocess on an embedded local Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mqt_llava.config import REPO_ROOT
from mqt_llava.data.synthetic import random_scene, render_scene
from mqt_llava.inference import InferenceEngine, Request

pytestmark = pytest.mark.e2e


def test_quickstart_reports_every_budget_and_writes_a_loadable_export(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "jobs/quickstart.py", "--run-dir", str(tmp_path), "--budgets", "1,2,4,8,16,M"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "step 1/2: data" in done.stdout and "step 2/2: model" in done.stdout

    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("558k", "665k"):  # the synthetic corpus converts without a reject
        assert summary["data"][name]["read"] == summary["data"][name]["written"] == 400
    assert "batch 2: input_ids (8, " in done.stdout and "pixel_values (" in done.stdout
    result = summary["model"]
    rows = result["rows"]
    assert [r["m"] for r in rows] == [1, 2, 4, 8, 16, 64]
    assert all(r["visual_tokens"] == r["m"] for r in rows)
    # the prompt grows by exactly the extra visual tokens
    assert all(r["prompt_tokens"] - r["m"] == rows[0]["prompt_tokens"] - 1 for r in rows)
    assert all(r["prefill_ms"] > 0 for r in rows)

    # the export reproduces, in this process, the answers the job's Ray worker printed
    engine = InferenceEngine.from_export(tmp_path / "export")
    assert engine.max_visual_tokens == 64
    image = render_scene(random_scene(result["scene_seed"]), *result["image_size"])
    for row in rows[::2]:
        assert engine.generate([Request(result["question"], image)], row["m"], 16) == [row["answer"]]


def test_quickstart_refuses_a_budget_above_M(tmp_path):
    done = subprocess.run(
        [sys.executable, "jobs/quickstart.py", "--run-dir", str(tmp_path), "--budgets", "65"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "outside 1..64" in done.stderr
    assert not Path(tmp_path, "summary.json").exists()
