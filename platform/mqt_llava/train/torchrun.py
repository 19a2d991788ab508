"""A stage without Ray: the same training loop under `torchrun`, one process per rank, on one
machine (or several with a shared disk). What a lent GPU machine without Ray runs.

    torchrun --nproc-per-node 2 jobs/stage1.py --config tiny/stage1 --set data=... --storage runs/train

Every rank resolves the run itself (the same config gives the same plan), reads its equal share of
the shards in-process (mqt_llava.data.batches.LocalShard), and checkpoints under
`<storage>/<name>/checkpoints`; the same command again resumes from the newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

from mqt_llava.data.batches import LocalShard
from mqt_llava.model.builder import image_settings_for
from mqt_llava.train.context import TorchrunContext
from mqt_llava.train.loop import train_loop, worker_setup
from mqt_llava.train.plan import StageRun

TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"  # set by torchrun for every process it starts


def under_torchrun() -> bool:
    return TORCHRUN_ENV in os.environ


def run_with_torchrun(run: StageRun) -> None:
    """Train `run` in this torchrun process (every rank calls this)."""
    use_gpu = run.stage.resources.use_gpu
    if use_gpu is None:
        use_gpu = torch.cuda.is_available()
    run = dataclasses.replace(run, use_gpu=use_gpu)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != run.stage.num_workers:
        raise SystemExit(
            f"config error: num_workers is {run.stage.num_workers} but torchrun started {world} processes "
            f"(--nproc-per-node x nodes must equal num_workers: the plan and ZeRO shards depend on it)"
        )
    shard = LocalShard(
        run.stage.data, run.model, run.stage.template, image_settings_for(run.model), rank, world, run.stage.max_length
    )
    context = TorchrunContext(run.run_dir, shard, run.stage.keep_checkpoints, use_gpu)
    if rank == 0:
        print(
            f"[{run.name}] {run.stage.stage} under torchrun: {world} rank(s) on {'GPU' if use_gpu else 'CPU'}; "
            f"{run.plan.total_steps} optimizer steps; run dir {run.run_dir}",
            flush=True,
        )
    train_loop(run, context, worker_setup(run, context))
    dist.barrier()
    dist.destroy_process_group()
