"""The main job, run as a user runs it: a subprocess on an embedded local Ray, at small sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from checkout import REPO_ROOT
from mqt_llava.inference import InferenceEngine
from mqt_llava.toy import heldout

pytestmark = pytest.mark.e2e

SMALL = [
    "world={num_pretrain: 160, num_instruct: 160, num_eval: 12}",
    "heldout_scenes=12",
    "heldout_budgets=2,M",
    "evaluate={budgets: '2,M', limit: 8}",
    "base_models.clip.steps=10",
    "base_models.lm.steps=10",
    "base_models.lm.reading=64",
    "base_models.lm.drills=32",
    "base_models.clip.probe_scenes=12",
    "base_models.lm.gate_scenes=4",
    "stage1.max_steps=3",
    "stage2.max_steps=3",
]


def quickstart(run_dir, *overrides, timeout=1400, env=None):
    """The job as a user runs it. `timeout` only guards against a hang: the small run below took 7-15
    minutes on 2 cores (most of it Ray Train, Ray Data and Tune starting up, five times), and speed is
    the benchmarks' business, not a test's. It stays under pytest's own limit (pyproject.toml), so a
    run that hangs fails here, with the step it was in."""
    sets = [a for o in (f"run_dir={run_dir}", *overrides) for a in ("--set", o)]
    try:
        return subprocess.run(
            [sys.executable, "jobs/quickstart.py", *sets],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:  # its output is bytes whatever `text` says
        out, err = ((part or b"").decode(errors="replace")[-3000:] for part in (exc.stdout, exc.stderr))
        pytest.fail(f"the quickstart ran past {timeout} s; its stdout ends:\n{out}\nits stderr ends:\n{err}")


def test_quickstart_runs_every_step_and_reports_accuracy_per_budget(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = quickstart(tmp_path, *SMALL, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    # the libraries' routine output is off by default (--verbose restores it)
    output = done.stdout + done.stderr
    noise = (
        "Reporting training result",
        "Checkpoint successfully created",
        "Execution plan of Dataset",
        "Skipping zero-size file",
        "Creating initial MLflow database tables",
        "\x1b[",
    )
    found = {n: output[max(0, output.find(n) - 300) : output.find(n) + 100] for n in noise if n in output}
    assert found == {}  # each with the text around it: which library printed it
    steps = ("data", "base models", "shards", "stage 1", "stage 2", "evaluate", "benchmarks", "serve", "ablation")
    for i, name in enumerate(steps, 1):
        assert f"step {i}/{len(steps)}: {name}" in done.stdout

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data"]["num_instruct"] == 160
    for name in ("558k", "665k"):  # the synthetic corpus converts without a reject
        assert summary["shards"][name]["read"] == summary["shards"][name]["written"] == 160
    for stage in ("stage1", "stage2"):
        assert summary[stage]["metrics"]["step"] == 3
    scores = summary["evaluate"]["scores"]
    assert list(scores) == ["majority", "m=2/image", "m=32/image", "m=32/blank"]  # the controls beside the model
    assert all(0 <= row["all"]["low"] <= row["all"]["estimate"] <= row["all"]["high"] <= 1 for row in scores.values())
    assert "held-out exact match" in done.stdout and "uses the image at m = 32" in done.stdout
    assert list(summary["evaluate"]["pilot_gates"]) == list(heldout.PILOT_GATES)
    focus = summary["evaluate"]["focus"]  # how the visual tokens share the image, at each held-out budget
    assert list(focus) == ["2", "32"]
    assert all(0 <= f["similarity"] <= 1 + 1e-6 and f["images"] > 0 for f in focus.values())
    assert "visual tokens at m = 32 over" in done.stdout
    assert len((tmp_path / "heldout" / "m32-blank.jsonl").read_text().splitlines()) == summary["evaluate"]["questions"]
    base = summary["base_models"]  # the gates are computed and reported (passing needs full-size training)
    assert {"emptiness", "colour", "shape", "size"} <= set(base["clip_probe"]) and "passed" in base["clip_probe"]
    assert "passed" in base["lm_scene_reading"] and "gate clip per-cell probe" in done.stdout

    # stage 2 loaded the base models and stage 1's MQT; its export is what evaluation loaded
    record = json.loads((tmp_path / "train/tiny-stage2/export/mqt_llava_training.json").read_text())
    assert record["stage"]["init_from"] == str(tmp_path / "train/tiny-stage1/export")
    assert record["model"]["llm"]["pretrained"] == str(tmp_path / "base_models/llm")
    assert InferenceEngine.from_export(tmp_path / "train/tiny-stage2/export").max_visual_tokens == 32

    # the sweep ran the real adapters on the synthetic benchmark files and printed Table 1
    assert (
        "| # tokens | SQA-IMG | VQAv2 (val, local) | GQA | POPE | MME-P | MME-C | MMB (local, no GPT matching) | "
        "Avg of the scored columns (not the paper's 11) |"
    ) in done.stdout  # the paper's Table 1: its columns, its order; the toy world has no evaluation server
    sweep = summary["benchmarks"]["scores"]
    assert set(sweep) == {f"{b}@{m}" for b in ("vqav2", "gqa", "mme", "pope", "scienceqa", "mmbench") for m in (2, 32)}
    assert 0 <= sweep["pope@32"]["f1"] <= 100 and 0 <= sweep["mme@2"]["perception"] <= sweep["mme@2"]["perception_max"]
    assert (tmp_path / "eval" / "results.csv").exists() and (tmp_path / "eval" / "plots" / "pope.png").exists()

    # serve_apps/config.yaml's application answered over HTTP at each tier's budget, and at `auto`
    served = summary["serve"]
    assert served["models"] == ["fast", "balanced", "full", "auto"]
    assert [served["answers"][t]["visual_tokens"] for t in ("fast", "balanced", "full")] == [4, 16, 32]
    assert served["answers"]["auto"]["tier"] == "full"  # an idle server: the largest budget
    prompts = [served["answers"][t]["usage"]["prompt_tokens"] for t in ("fast", "balanced", "full")]
    assert prompts[1] - prompts[0] == 12 and prompts[2] - prompts[1] == 16  # the visual tokens are counted
    assert served["refused"] == 400

    # the two-trial ablation (linear vs log schedule) on one shared stage 1, with its report
    ablation = summary["ablation"]
    assert ablation["trials"] == 2
    assert len(list((tmp_path / "ablation/quickstart/runs").glob("stage1-*/done.json"))) == 1
    report = Path(ablation["report"]).read_text()
    assert "| baseline | 1 |" in report and "| log-schedule | 1 |" in report and "## The paper's claims" in report


def test_quickstart_refuses_a_budget_above_M_before_running(tmp_path):
    done = quickstart(tmp_path, "heldout_budgets=2,33", timeout=120)
    assert done.returncode == 2 and "heldout_budgets: 33 outside 1..32" in done.stderr
    assert not Path(tmp_path, "data").exists()


def test_quickstart_until_stops_after_the_named_step_in_the_world_asked_for(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    world = "world={num_pretrain: 8, num_instruct: 8, num_eval: 4, cells: 8}"
    done = quickstart(tmp_path, world, "heldout_scenes=4", "until=data", env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "step 1/1: data" in done.stdout and "base models" not in done.stdout
    corpus = json.loads((tmp_path / "data" / "corpus.json").read_text())
    assert (corpus["cells"], corpus["num_eval"]) == (8, 4)
    assert (tmp_path / "benchmarks" / "synthetic.json").exists() and not (tmp_path / "base_models").exists()

    bad = quickstart(tmp_path, "world.cells=x", timeout=120)
    assert bad.returncode == 2 and "world.cells" in bad.stderr
