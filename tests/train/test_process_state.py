"""Library code leaves the process as it found it, and a GPU worker's DeepSpeed takes the GPU.

A process-wide change made on the CPU (an environment variable, the global RNG) is the right value
there and silently the wrong one on a GPU: the memory check once set DS_ACCELERATOR=cpu for the rest
of the process, and every GPU worker's DeepSpeed then kept the model on the CPU and broadcast CPU
tensors over NCCL. No CPU run can see that, so the GPU worker's set-up is run here with a GPU-shaped
configuration (the llava-7b preset, use_gpu true) on a machine whose torch is told it has a GPU,
as far as the point where DeepSpeed has chosen its accelerator, device and backend.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import warnings

import deepspeed  # noqa: F401  its import sets PYTORCH_NVML_BASED_CUDA_CHECK: DeepSpeed's own doing, not ours
import torch

from mqt_llava.config import load_config, model_config_path
from mqt_llava.model.builder import build_model
from mqt_llava.model.spec import ModelSpec
from mqt_llava.train.memory import check_fits
from mqt_llava.train.plan import resolve_run
from mqt_llava.train.spec import StageSpec
from mqt_llava.train.strategies.deepspeed import DeepSpeedStrategy
from small_model import small_spec

# The GPU worker's set-up in a fresh process (DeepSpeed picks its accelerator once per process, so an
# earlier import in this test process must not decide it). torch is told it has one 80-GiB GPU: a
# fault injected so that the code paths that read the hardware take their GPU branch; nothing runs
# on the pretended device.
GPU_WORKER = textwrap.dedent(
    """
    import json, os, sys, types
    import torch

    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1
    torch.cuda.set_device = lambda device: None
    torch.cuda.get_device_name = lambda device=None: "GPU-shaped test device"
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(total_memory=80 * 2**30)
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")

    from mqt_llava.config import load_config, model_config_path
    from mqt_llava.model.spec import ModelSpec
    from mqt_llava.train.spec import StageSpec
    from mqt_llava.train.context import TorchrunContext
    from mqt_llava.train.loop import worker_setup
    from mqt_llava.train.plan import StageRun, plan_steps

    stage = load_config(StageSpec, "llava-7b/" + sys.argv[1])
    model = load_config(ModelSpec, model_config_path("llava-7b"))
    assert stage.resources.use_gpu, "the llava-7b preset trains on GPUs"
    run = StageRun(stage, model, "gpu-shaped", sys.argv[2], plan_steps(stage, model, 665_298), use_gpu=True)
    context = TorchrunContext(run.run_dir, shard=None, keep=1, use_gpu=True)
    strategy = worker_setup(run, context)

    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator()
    print(json.dumps({
        "accelerator": accelerator.device_name(),
        "model_device": accelerator.device_name(context.device.index),
        "accelerator_backend": accelerator.communication_backend_name(),
        "strategy_backend": strategy.backend,
        "strategy_accelerator": strategy.accelerator,
        "context_device": str(context.device),
        "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR"),
    }))
    """
)


def gpu_worker_setup(stage: str, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}  # a GPU node's environment
    done = subprocess.run(
        [sys.executable, "-c", GPU_WORKER, stage, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_gpu_worker_puts_deepspeed_on_cuda_with_nccl_after_its_memory_check(tmp_path):
    for stage in ("stage1", "stage2"):
        seen = gpu_worker_setup(stage, tmp_path)
        assert seen == {
            "accelerator": "cuda",
            "model_device": "cuda:0",  # where deepspeed.initialize moves the model
            "accelerator_backend": "nccl",
            "strategy_backend": "nccl",
            "strategy_accelerator": "cuda",
            "context_device": "cuda:0",
            "DS_ACCELERATOR": None,
        }, stage


def test_a_cpu_run_on_a_gpu_node_puts_deepspeed_on_the_cpu(tmp_path):
    """The reverse correction: DeepSpeed would take CUDA on a GPU node, the run asked for the CPU."""
    script = textwrap.dedent(
        """
        import torch
        torch.cuda.is_available = lambda: True
        torch.cuda.device_count = lambda: 1
        from mqt_llava.train.spec import StageSpec
        from mqt_llava.train.strategies.deepspeed import DeepSpeedStrategy
        from deepspeed.accelerator import get_accelerator
        assert get_accelerator().device_name() == "cuda"  # DeepSpeed's own choice on this "node"
        stage = StageSpec(model="tiny", stage="stage1", template="plain", data="x", global_batch_size=1,
                          micro_batch_size=1, lr=1e-3)
        strategy = DeepSpeedStrategy(stage, use_gpu=False)
        print(get_accelerator().device_name(), strategy.backend)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["cpu", "gloo"]


def process_state() -> dict:
    """What library code must leave as it found it (mqt_llava.output is where jobs set it on purpose)."""
    loggers = ("DeepSpeed", "transformers", "ray.train", "ray.data", "mlflow")
    return {
        "environ": dict(os.environ),
        "rng": torch.random.get_rng_state().tolist(),
        "dtype": torch.get_default_dtype(),
        "threads": torch.get_num_threads(),
        "warning filters": list(warnings.filters),
        "tf32": (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32),
        "logger levels": {name: logging.getLogger(name).level for name in loggers},
    }


def test_memory_check_model_building_and_job_setup_leave_the_process_as_they_found_it(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(pa.table({"id": [str(i) for i in range(64)]}), shards / "part-0.parquet")
    model_file = tmp_path / "model.yaml"
    model_file.write_text(yaml.safe_dump(small_spec().model_dump()))
    config = tmp_path / "stage2.yaml"
    stage = dict(
        model=str(model_file),
        stage="stage2",
        template="vicuna_v1",
        data=str(shards),
        global_batch_size=8,
        micro_batch_size=4,
        lr=1e-3,
    )
    config.write_text(yaml.safe_dump(stage))
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)  # a GPU node's environment: a setdefault would show
    before = process_state()

    seven_b = load_config(ModelSpec, model_config_path("llava-7b"))
    check_fits(load_config(StageSpec, "llava-7b/stage2"), seven_b, 80, "an 80-GiB GPU")
    first = build_model(small_spec(), seed=3)  # a stage's model, seeded as every rank seeds it
    run = resolve_run(config, [], name=None, storage=str(tmp_path / "runs"))
    DeepSpeedStrategy(run.stage, use_gpu=False)

    after = process_state()
    assert {key for key in before if before[key] != after[key]} == set()
    again = build_model(small_spec(), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first.model.parameters(), again.model.parameters(), strict=True))
