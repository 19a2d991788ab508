"""jobs/ablation.py as a user runs it, at toy sizes, against an MLflow tracking server on loopback:
stage 1 shared between trials (two variants that differ in stage 2 only; that a stage-1 axis gets its
own stage 1 is tests/ablation/test_ablation_spec.py's, by key), an interrupted experiment resumed with
Tuner.restore without redoing finished trials, the trials found through MLflow's REST API, and the
report."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
import yaml
from loopback import free_port
from small_stages import small_ablation

from checkout import REPO_ROOT

pytestmark = pytest.mark.e2e
NAME = "toy"
NOISE = (
    "Reporting training result",
    "Checkpoint successfully created",
    "Execution plan of Dataset",
    "Skipping zero-size file",
    "Creating initial MLflow database tables",
    "\x1b[",
)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a loaded 2-core machine: the server took over 60 s to answer
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=5).ok:
                break
        except requests.RequestException:  # not listening yet, or listening but not answering yet
            pass
        time.sleep(0.5)
    else:
        server.kill()
        raise TimeoutError("mlflow server did not start")
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:  # a loaded machine: its shutdown can outlast 30 s
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def config(tmp_path_factory, mlflow_server, ray_local):  # ray_local: prepare() below runs on Ray
    root = tmp_path_factory.mktemp("ablation")
    spec = small_ablation(
        root,
        records=64,
        num_eval=6,
        name=NAME,
        eval={"benchmarks": ["pope", "vqav2"], "limit": 12},
        heldout={
            "questions": "mqt_llava.toy.heldout:QUESTIONS",
            "corpus": str(root / "corpus"),
            "scenes": 3,
            "curves": {"baseline": "2,M"},
        },
        axes={"schedule": ["linear", "log"]},
        tracking_uri=mlflow_server,
        experiment="ablation-test",
    )
    path = root / "ablation.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, root / "experiments" / NAME


def ablation(config_path, **popen):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, "jobs/ablation.py", "--config", str(config_path)]
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def test_an_interrupted_ablation_resumes_without_redoing_finished_trials(config, mlflow_server):
    path, root = config
    first = ablation(path, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(root.glob("trials/*/result.json")):
        assert first.poll() is None, first.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no trial finished in 10 minutes"
        time.sleep(2)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and stops
    first.communicate(timeout=180)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in root.glob("trials/*/result.json")}
    assert 1 <= len(finished) <= 2  # on a machine with 4 CPUs or more both trials run at once
    partial = subprocess.run(
        [sys.executable, "jobs/ablation.py", "--config", str(path), "--report"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert partial.returncode == 0 and f"report from {len(finished)}/2 finished trials" in partial.stdout, (
        partial.stderr
    )
    partial_report = (root / "report" / "ablation_report.md").read_text()
    assert all(f"| {name.removesuffix('_seed0')} | 1 |" in partial_report for name in finished)

    second = ablation(path)
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out[-6000:]
    assert "restoring" in out
    # The job's output (Tune, Train, Data and MLflow in its trials) is free of the libraries' routine lines,
    # which the job turns off by default (--verbose restores them); this was the full quickstart's check.
    found = {n: out[max(0, out.find(n) - 300) : out.find(n) + 100] for n in NOISE if n in out}
    assert found == {}  # each with the text around it: which library printed it
    results = {p.parent.name: json.loads(p.read_text()) for p in root.glob("trials/*/result.json")}
    assert set(results) == {"baseline_seed0", "log-schedule_seed0"}
    for name, mtime in finished.items():  # a trial finished before the interrupt was not run again
        assert (root / "trials" / name / "result.json").stat().st_mtime_ns == mtime

    # baseline and log-schedule differ only in stage 2: one stage-1 run between them
    assert results["baseline_seed0"]["stage1_export"] == results["log-schedule_seed0"]["stage1_export"]
    assert len(list(root.glob("runs/stage1-*/done.json"))) == 1

    baseline = results["baseline_seed0"]
    assert set(baseline["kinds"]) == {"2", "8"} and 0 <= baseline["kinds"]["8"]["all"] <= 1  # its curve
    assert set(results["log-schedule_seed0"]["kinds"]) == {"8"}  # the others: M only
    assert baseline["schedule_support"] == [2, 4, 6, 8] and results["log-schedule_seed0"]["schedule_support"] == [
        2,
        4,
        8,
    ]

    report = (root / "report" / "ablation_report.md").read_text()
    assert "## The paper's claims" in report
    assert "| 1 | tokens are nested: the first m of the M tokens are the tokens at m | **reproduced** |" in report
    # a claim whose variant the grid lacks is said to be untested, not left out
    assert "| 5 | attention→projection > projection→attention | **not tested** |" in report
    kept = root / "runs" / "stage2-baseline_seed0" / "heldout"  # every held-out answer, for paired claims
    assert sorted(p.name for p in kept.iterdir()) == ["m2-image.jsonl", "m8-blank.jsonl", "m8-image.jsonl"]
    assert "| variant | seeds | VQAv2 | POPE | Avg (% of max) |" in report
    for variant in ("baseline", "log-schedule"):
        assert f"| {variant} | 1 |" in report
    assert (root / "report" / "curve_pope.png").exists()

    # MLflow, through the tracking server's REST API: a parent run with one child per trial (and the
    # shared stage 1), the axes as params, training and evaluation metrics, the report as artifacts
    api = f"{mlflow_server}/api/2.0/mlflow"
    experiment = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "ablation-test"}).json()
    runs = requests.post(
        f"{api}/runs/search", json={"experiment_ids": [experiment["experiment"]["experiment_id"]], "max_results": 100}
    ).json()["runs"]

    def tags(run):
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    (parent,) = [r for r in runs if tags(r).get("mqt_llava.run_name") == NAME]
    children = [r for r in runs if tags(r).get("mlflow.parentRunId") == parent["info"]["run_id"]]
    trials = {tags(r)["mqt_llava.run_name"]: r for r in children if "mqt_llava.ablation" in tags(r)}
    assert set(trials) == {"baseline/seed0", "log-schedule/seed0"}
    assert len(children) == 2 + 1  # the trials and their one stage-1 run
    params = {p["key"]: p["value"] for p in trials["log-schedule/seed0"]["data"]["params"]}
    assert params["schedule"] == "log" and params["order"] == "attention_then_projection"
    metrics = {m["key"] for m in trials["log-schedule/seed0"]["data"]["metrics"]}
    assert {"loss", "pope/f1", "vqav2/accuracy"} <= metrics
    listed = requests.get(f"{api}/artifacts/list", params={"run_id": parent["info"]["run_id"], "path": "report"}).json()
    assert "report/ablation_report.md" in {f["path"] for f in listed["files"]}
