"""The training loop without Ray: two CPU ranks under torchrun (what a lent GPU machine runs),
checkpointing, resuming and exporting exactly as under Ray Train. (A rank count other than
num_workers is refused by run_with_torchrun: tests/train/test_torchrun_markers.py.)"""

import json
import os
import subprocess
import sys

import mlflow
import pytest
import torch
from small_stages import write_small_stages

from checkout import REPO_ROOT
from mqt_llava.inference import InferenceEngine
from mqt_llava.tracking import RUN_NAME_TAG, TrackingSpec, tracking_uri

pytestmark = pytest.mark.e2e


def torchrun(config, storage, *overrides, port):
    sets = [a for o in ("num_workers=2", "checkpoint_every=2", *overrides) for a in ("--set", o)]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(port),
        "jobs/stage1.py",
        "--config",
        str(config),
        "--storage",
        str(storage),
        "--name",
        "tr",
        *sets,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """A 64-record corpus as shards and both stage configs, for the module."""
    return write_small_stages(tmp_path_factory.mktemp("torchrun"), records=64)


def test_two_ranks_train_checkpoint_resume_and_export_without_ray(configs, tmp_path):
    storage = tmp_path / "runs"
    first = torchrun(configs["stage1"], storage, "max_steps=3", port=29611)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "under torchrun: 2 rank(s) on CPU" in first.stdout and "[tr] step 3/3" in first.stdout
    assert "ray" not in first.stdout.lower().replace("array", "")  # no Ray was started or imported to log
    run = storage / "tr"
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["checkpoint_0000002", "checkpoint_0000003"]  # keep_checkpoints: 2
    for rank in (0, 1):
        assert (run / "checkpoints/checkpoint_0000003" / f"worker_rank{rank}.pt").exists()
    record = json.loads((run / "export/mqt_llava_training.json").read_text())
    assert record["plan"]["total_steps"] == 3 and record["stage"]["num_workers"] == 2

    second = torchrun(configs["stage1"], storage, "max_steps=4", port=29612)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "[tr] resumed at step 3/4" in second.stdout and "[tr] step 4/4" in second.stdout
    engine = InferenceEngine.from_export(run / "export")
    assert engine.max_visual_tokens == 8
    assert torch.isfinite(engine.model.connector.queries).all()


def test_a_run_that_fails_under_torchrun_is_failed_in_mlflow(configs, tmp_path):
    """A fault on disk: a file where step 2's checkpoint directory must go. Every rank raises; rank 0
    marks its MLflow run FAILED on the way out."""
    storage = tmp_path / "runs"
    blocked = storage / "tr" / "checkpoints" / "checkpoint_0000002"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")
    done = torchrun(configs["stage1"], storage, "max_steps=3", port=29614)
    assert done.returncode != 0 and "FileExistsError" in done.stdout + done.stderr
    client = mlflow.MlflowClient(tracking_uri(TrackingSpec(), str(storage)))
    (found,) = client.search_runs(
        [client.get_experiment_by_name("mqt-llava").experiment_id], f"tags.`{RUN_NAME_TAG}` = 'tr'"
    )
    assert found.info.status == "FAILED"
