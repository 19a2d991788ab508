"""Stage 1 and 2 on a real (embedded) Ray Train + DeepSpeed on CPU, with a small model: the chain,
the export, MLflow, a killed worker, a resubmitted run, and a bad config."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import ray
import torch
from safetensors.torch import load_file
from small_stages import write_small_stages

from checkout import REPO_ROOT
from mqt_llava.model.schedules import schedule_support
from mqt_llava.tracking import RUN_NAME_TAG
from mqt_llava.train.checkpoint import saved_weight_names
from mqt_llava.train.checkpoint_export import export_checkpoint
from mqt_llava.train.launch import run_stage
from mqt_llava.train.memory import DoesNotFit
from mqt_llava.train.plan import resolve_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_local):
    """A small model YAML, a 96 + 96 record corpus as shards, and both stage configs."""
    root = tmp_path_factory.mktemp("training")
    return root, write_small_stages(root)


def train(config, storage, name, *overrides):
    return run_stage(resolve_run(config, list(overrides), name=name, storage=str(storage)))


CHAIN_STAGE2 = ["max_steps=6"]  # with init_from=<stage 1's export>


@pytest.fixture(scope="module")
def chain(setup):
    """Stage 1 (s1), then stage 2 (s2) from its export, six steps each: trained once for the module."""
    root, configs = setup
    storage = root / "runs"
    one = train(configs["stage1"], storage, "s1", "max_steps=6")
    two = train(configs["stage2"], storage, "s2", *CHAIN_STAGE2, f"init_from={one.export_dir}")
    return storage, one, two


def history(storage: Path, name: str, metric: str) -> list[tuple[int, float]]:
    client = mlflow.MlflowClient(f"sqlite:///{storage}/mlflow.db")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("mqt-llava").experiment_id], f"tags.`{RUN_NAME_TAG}` = '{name}'"
    )
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric)]


def test_stage1_then_stage2_train_export_and_track(setup, chain):
    root, _ = setup
    storage, one, two = chain

    for result in (one, two):
        assert result.metrics["step"] == 6
        steps = [s for s, _ in history(storage, result.run.name, "loss")]
        assert steps == [1, 2, 3, 4, 5, 6]  # one loss per optimizer step
        # checkpoints at steps 2, 4, 6; the last two kept
        kept = sorted(p.name for p in (storage / result.run.name).glob("checkpoint_0*"))
        assert kept == ["checkpoint_0000004", "checkpoint_0000006"]
        assert json.loads((Path(result.export_dir) / "mqt_llava_training.json").read_text())["plan"]["total_steps"] == 6

    assert {v for _, v in history(storage, "s1", "m")} == {8.0}  # stage 1: all M tokens
    drawn = {v for _, v in history(storage, "s2", "m")}
    assert drawn <= set(schedule_support("linear", 8, 2)) and len(drawn) > 1
    assert all(v > 0 for _, v in history(storage, "s2", "samples_per_s"))

    # What each stage trains, read back from the exports (stage 2's gathered from ZeRO-3 partitions).
    w1 = load_file(Path(one.export_dir) / "model.safetensors")
    w2 = load_file(Path(two.export_dir) / "model.safetensors")
    tower = [k for k in w1 if k.startswith("vision_tower.")]
    assert tower and all(torch.equal(w1[k], w2[k]) for k in tower)  # frozen in both stages
    assert not torch.equal(w1["connector.queries"], w2["connector.queries"])  # stage 2 trains the MQT further
    lm_head = "language_model.lm_head.weight"
    assert not torch.equal(w1[lm_head], w2[lm_head])  # and the LLM

    # Checkpoints hold only what the stage trains (ZeRO-2 in stage 1, ZeRO-3 in stage 2), and any of
    # them becomes an export: the last one equals the run's own export, weight for weight.
    for result, parts in ((one, {"connector"}), (two, {"connector", "language_model"})):
        checkpoint = storage / result.run.name / "checkpoint_0000006"
        assert {name.split(".")[0] for name in saved_weight_names(checkpoint)} == parts
        out = export_checkpoint(checkpoint, root / f"{result.run.name}-from-checkpoint")
        record = json.loads((out / "mqt_llava_training.json").read_text())
        assert record["exported_from"]["step"] == 6 and record["stage"]["zero_stage"] == result.run.stage.zero_stage
        own, made = load_file(Path(result.export_dir) / "model.safetensors"), load_file(out / "model.safetensors")
        assert own.keys() == made.keys() and all(torch.equal(own[k], made[k]) for k in own)

    # The export loads and generates where DeepSpeed cannot even be imported.
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["deepspeed"] = None  # any import of it fails
        from PIL import Image
        from mqt_llava.inference import InferenceEngine, Request
        engine = InferenceEngine.from_export({two.export_dir!r})
        print("ANSWER", engine.generate([Request("What colour is the circle?", Image.new("RGB", (40, 30)))], 4))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert done.returncode == 0 and "ANSWER" in done.stdout, done.stderr[-3000:]

    client = mlflow.MlflowClient(f"sqlite:///{storage}/mlflow.db")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("mqt-llava").experiment_id], "tags.`mqt_llava.run_name` = 's2'"
    )
    assert run.data.params["stage.init_from"] == one.export_dir and run.data.params["stage.zero_stage"] == "3"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config", "export"} <= artifacts


def test_same_seed_same_losses_even_beside_a_busy_process(setup, chain):
    """A run is a function of its seed and worker count: stage 2 (shuffle buffer, modality grouping,
    drawn budgets, from stage 1's export) run again under another name, beside a process that keeps a
    core busy, logs the same loss and m at every step as the chain's s2, to the bit. (The first of the
    two runs is the chain's: one stage-2 run fewer than training a pair of its own.)"""
    root, configs = setup
    storage, one, _ = chain
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        train(configs["stage2"], storage, "busy", *CHAIN_STAGE2, f"init_from={one.export_dir}")
    finally:
        hog.kill()
    for metric in ("loss", "m"):
        quiet, busy = history(storage, "s2", metric), history(storage, "busy", metric)
        assert len(quiet) == 6 and quiet == busy, (metric, quiet, busy)


def kill_train_worker_after(run_dir: Path, checkpoint: str, timeout: float = 300) -> int:
    """Wait until Ray Train has registered `checkpoint` (its snapshot names it: the directory alone
    appears while it is still being written), then SIGKILL the Ray Train worker processes."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout
    while not (snapshot.exists() and checkpoint in snapshot.read_text()):
        assert time.monotonic() < deadline, f"{checkpoint} never registered"
        time.sleep(0.1)
    # Only this session's workers: other Ray instances on the machine may be training too.
    session = ray.worker._global_node.get_session_dir_path()
    raylets = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "raylet" and any(session in part for part in p.info["cmdline"] or [])
    ]
    killed = 0
    for raylet in raylets:
        for process in raylet.children(recursive=True):
            try:
                if (process.cmdline() or [""])[0].startswith("ray::RayTrainWorker"):
                    process.kill()
                    killed += 1
            except (psutil.ZombieProcess, psutil.NoSuchProcess):  # an earlier test's worker, dead or reaped
                continue
    return killed


def test_killed_workers_are_replaced_and_a_resubmitted_run_goes_on_on_two_workers(setup):
    """Two workers, killed after step 4's checkpoint of 20 (16 steps still to run when the kill comes):
    the worker group is replaced and resumes at a checkpoint step with trained weights, and every step
    is logged. Every rank wrote its own ZeRO optimizer shard and worker state into each checkpoint.
    Then the same run name is submitted again with more steps: it resumes from its last checkpoint
    and logs exactly the steps that follow. (One run where two used to be: a killed run and a
    resubmitted one each paid Ray Train's start.)"""
    root, configs = setup
    storage = root / "runs"
    two_workers = ["num_workers=2", "resources.worker_cpus=0.25", "checkpoint_every=4", "epochs=2"]
    results = {}
    thread = threading.Thread(
        target=lambda: results.update(run=train(configs["stage1"], storage, "killed", "max_steps=20", *two_workers))
    )
    thread.start()
    killed = kill_train_worker_after(storage / "killed", "checkpoint_0000004")
    thread.join(timeout=600)
    assert killed >= 1 and "run" in results  # both, unless Ray tore the second down first
    first = results["run"]
    assert first.metrics["step"] == 20 and first.run.stage.gradient_accumulation_steps == 1
    (resumed_at,) = [v for _, v in history(storage, "killed", "resumed_from_step")]
    assert 4 <= resumed_at < 20 and resumed_at % 4 == 0  # a checkpoint step, before the end
    losses = history(storage, "killed", "loss")
    assert {s for s, _ in losses} == set(range(1, 21))  # no step missing
    latest = dict(losses)  # the resumed attempt's value where a step was logged twice
    assert latest[int(resumed_at) + 1] < latest[1]  # resumed from trained weights, not from scratch
    checkpoint = storage / "killed" / "checkpoint_0000020"
    assert {p.name for p in checkpoint.glob("worker_rank*.pt")} == {"worker_rank0.pt", "worker_rank1.pt"}
    assert len(list(checkpoint.glob("ckpt/*optim_states.pt"))) == 2

    again = train(configs["stage1"], storage, "killed", "max_steps=24", *two_workers)
    assert again.metrics["step"] == 24
    assert [v for _, v in history(storage, "killed", "resumed_from_step")] == [resumed_at, 20.0]
    assert [s for s, _ in history(storage, "killed", "loss")][len(losses) :] == [21, 22, 23, 24]


def test_a_gpu_run_that_does_not_fit_its_gpus_is_refused_before_any_worker_starts(setup):
    root, configs = setup
    with pytest.raises(DoesNotFit, match=r"memory plan \(resources.gpu_memory_gib = 0.5\): does not fit"):
        train(configs["stage1"], root / "runs", "too-big", "resources.use_gpu=true", "resources.gpu_memory_gib=0.5")
    assert not (root / "runs" / "too-big").exists()


def test_a_run_whose_worker_dies_past_max_failures_is_failed_in_mlflow(setup):
    root, configs = setup
    storage = root / "runs"
    errors = []

    def run():
        try:
            train(configs["stage1"], storage, "dies", "epochs=4", "checkpoint_every=2", "max_failures=0")
        except Exception as exc:  # Ray Train's TrainingFailedError
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert kill_train_worker_after(storage / "dies", "checkpoint_0000002") == 1
    thread.join(timeout=600)
    assert errors, "the run should have failed: its only worker was killed and max_failures is 0"
    client = mlflow.MlflowClient(f"sqlite:///{storage}/mlflow.db")
    (found,) = client.search_runs(
        [client.get_experiment_by_name("mqt-llava").experiment_id], f"tags.`{RUN_NAME_TAG}` = 'dies'"
    )
    assert found.info.status == "FAILED"


def test_a_bad_config_fails_before_ray_starts(setup):
    root, configs = setup
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "jobs/stage2.py",
            "--config",
            str(configs["stage2"]),
            "--set",
            "micro_batch_size=0",
            "--storage",
            str(root / "bad"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "config error" in done.stderr and "micro_batch_size" in done.stderr
    assert not (root / "bad").exists() and "Ray:" not in done.stdout
    assert time.monotonic() - started < 60
