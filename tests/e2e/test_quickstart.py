"""The quickstart job as a user runs it (a subprocess on an embedded local Ray), through its first three
steps only. Its later steps are each another job's library and are tested there, at their own small
sizes: stage 1 -> stage 2 with export and MLflow (test_training.py), the budget sweep on the synthetic
benchmark files (test_evaluate.py; every adapter in tests/eval/test_benchmarks.py), serve_apps/config.yaml
on real Serve (test_serving.py), a Tune ablation sharing stage 1 with its report (test_ablation.py,
which also checks that a job's output is free of the libraries' routine lines). The quickstart's own
parts (its refusals, step 6's held-out table, step 8's tiers on the tiny preset, the closing lines)
are tests/recipes/test_quickstart_steps.py, without Ray."""

import json
import os
import subprocess
import sys

import pytest

from checkout import REPO_ROOT

pytestmark = pytest.mark.e2e

# the libraries' routine output that the job keeps off by default (--verbose restores it)
NOISE = ("Execution plan of Dataset", "Skipping zero-size file", "\x1b[")


def test_until_stops_after_the_named_step_with_every_step_before_it_done(tmp_path):
    """Steps 1-3 in order (data, base models: the package's shipped ones, shards) in the world asked for:
    the job's step sequence, `until`, and that the synthetic corpus converts to shards without a reject."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    small = ["world={num_pretrain: 24, num_instruct: 24, num_eval: 4}", "heldout_scenes=4", "until=shards"]
    sets = [a for o in (f"run_dir={tmp_path}", *small) for a in ("--set", o)]
    done = subprocess.run(
        [sys.executable, "jobs/quickstart.py", *sets],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for i, name in enumerate(("data", "base models", "shards"), 1):
        assert f"step {i}/3: {name}" in done.stdout
    assert "stage 1" not in done.stdout and not (tmp_path / "train").exists()
    assert f"what to open next:\n  the run directory: {tmp_path}" in done.stdout

    corpus = json.loads((tmp_path / "data" / "corpus.json").read_text())
    assert (corpus["num_pretrain"], corpus["num_eval"]) == (24, 4)
    assert (tmp_path / "benchmarks" / "synthetic.json").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    gates = summary["base_models"]["gates"]  # the shipped parts' gate figures, each printed
    assert gates and all(f"gate {name} " in done.stdout for name in gates)
    for name in ("558k", "665k"):  # the synthetic corpus converts without a reject
        assert summary["shards"][name]["read"] == summary["shards"][name]["written"] == 24

    output = done.stdout + done.stderr
    found = {n: output[max(0, output.find(n) - 300) : output.find(n) + 100] for n in NOISE if n in output}
    assert found == {}  # each with the text around it: which library printed it
