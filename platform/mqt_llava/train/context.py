"""Worker contexts: what the training loop needs from whatever launched it (rank, world size,
device, this rank's data shard, the checkpoint to resume from, reporting a checkpoint), so the same
loop runs under Ray Train and, unchanged, under `torchrun` on a machine without Ray.

- RayTrainContext: Ray Train V2. Checkpoints are written to a temporary directory on every rank and
  reported with `ray.train.report`; Ray merges them in the run's storage and keeps the newest ones.
- TorchrunContext: torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK). Checkpoints are written in
  place under `<run dir>/checkpoints/checkpoint_<step>` (one machine, or a shared disk), marked
  complete by a file rank 0 writes after every rank has saved; resuming takes the newest complete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist

from mqt_llava.output import is_verbose, quiet_ray_train_worker

COMPLETE = "complete.json"  # written last into a torchrun checkpoint


class Shard(Protocol):
    def iter_batches(
        self,
        batch_size: int,
        batch_format: str,
        drop_last: bool,
        local_shuffle_buffer_size: int | None,
        local_shuffle_seed: int | None,
    ) -> Iterator[dict]: ...


class WorkerContext(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def data_shard(self) -> Shard: ...

    def restored(self) -> contextlib.AbstractContextManager[Path | None]:
        """The checkpoint directory to resume from, or None for a fresh run."""

    def checkpoint(self, step: int, metrics: dict) -> contextlib.AbstractContextManager[Path]:
        """A directory for this rank to save into; on exit the checkpoint is reported (and kept)."""


class RayTrainContext:
    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        self.train = ray.train
        if not is_verbose():
            quiet_ray_train_worker()
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def data_shard(self) -> Shard:
        return self.train.get_dataset_shard("train")

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        found = self.train.get_checkpoint()
        if found is None:
            yield None
            return
        with found.as_directory() as directory:
            yield Path(directory)

    @contextlib.contextmanager
    def checkpoint(self, step: int, metrics: dict) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="mqt-checkpoint-") as directory:
            yield Path(directory)
            self.train.report(
                {**metrics, "step": step},
                checkpoint=self.train.Checkpoint.from_directory(directory),
                checkpoint_dir_name=f"checkpoint_{step:07d}",
            )


class TorchrunContext:
    def __init__(self, run_dir: str, shard: Shard, keep: int, use_gpu: bool) -> None:
        self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if use_gpu:
            torch.cuda.set_device(local_rank)
        self.device = torch.device(f"cuda:{local_rank}" if use_gpu else "cpu")
        self.root = Path(run_dir) / "checkpoints"
        self.shard, self.keep = shard, keep

    def data_shard(self) -> Shard:
        return self.shard

    def complete(self) -> list[Path]:
        return sorted(p.parent for p in self.root.glob(f"checkpoint_*/{COMPLETE}"))

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        found = self.complete()
        yield found[-1] if found else None

    @contextlib.contextmanager
    def checkpoint(self, step: int, metrics: dict) -> Iterator[Path]:
        directory = self.root / f"checkpoint_{step:07d}"
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        dist.barrier()  # every rank's part is on disk before the checkpoint counts
        if self.rank == 0:
            (directory / COMPLETE).write_text(json.dumps({**metrics, "step": step}))
            for old in self.complete()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
