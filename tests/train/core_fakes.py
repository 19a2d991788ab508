"""What the training core's unit tests run the real loop with, in one process and in seconds: a plain
torch strategy (no DeepSpeed), an in-memory data shard and an in-memory worker context (no Ray
Train). Importable by name from the tests (`from core_fakes import ...`)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from mqt_llava.data.samples import stack_rows
from mqt_llava.model.modeling import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from mqt_llava.train.checkpoint import DataPosition, TrainState, restore_progress, save_progress
from mqt_llava.train.plan import StagePlan, StageRun, plan_steps
from mqt_llava.train.spec import StageSpec
from mqt_llava.train.strategies import TrainingStrategy
from small_model import small_spec

SAMPLE_TOKEN = 100  # a sample's id is written into its text as token SAMPLE_TOKEN + id


@contextlib.contextmanager
def one_process_group(store: Path) -> Iterator[None]:
    """This process as a one-rank gloo group, as a worker is once it has joined; the group and the global
    RNG states (a resumed loop restores the checkpoint's, as a worker process does) are put back after."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    dist.init_process_group("gloo", store=dist.FileStore(str(store), 1), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class PlainTorchStrategy(TrainingStrategy):
    """AdamW and the cosine schedule with warmup in plain torch, stepping on the last micro-batch of
    each accumulation. It records what the loop hands it (m and the samples of every micro-batch, the
    losses) so that tests can compare runs."""

    kind = "plain-torch"

    def __init__(self, stage: StageSpec, use_gpu: bool) -> None:
        super().__init__(stage, use_gpu)
        self.micro_batches: list[dict] = []  # per micro-batch: m, loss, the samples' ids
        self.exports = 0

    def init_distributed(self) -> None:
        if not dist.is_initialized():
            raise RuntimeError("the test joins a one-process group first (the process_group fixture)")

    def setup(self, model: nn.Module, plan: StagePlan) -> None:
        self.model = model
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=self.stage.lr, weight_decay=self.stage.weight_decay)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, plan.warmup_steps, plan.total_steps)
        model.train()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def train_micro_batch(self, batch: dict[str, torch.Tensor], num_visual_tokens: int) -> float:
        loss = self.model(**batch, num_visual_tokens=num_visual_tokens).loss
        (loss / self.stage.gradient_accumulation_steps).backward()
        self.micro_batches.append(dict(m=num_visual_tokens, loss=loss.item(), samples=sample_ids(batch)))
        if len(self.micro_batches) % self.stage.gradient_accumulation_steps == 0:
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        return loss.item()

    def trained_state(self) -> dict[str, torch.Tensor]:
        names = {name for name, p in self.model.named_parameters() if p.requires_grad}
        return {k: v.detach().clone() for k, v in self.model.state_dict().items() if k in names}

    def save(self, directory: Path, rank: int, state: TrainState, position: DataPosition, config: dict) -> None:
        own = dict(
            model=self.trained_state(), optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict()
        )
        torch.save(own, directory / f"plain_torch_rank{rank}.pt")
        save_progress(directory, rank, state, position, config)

    def load(self, directory: Path, rank: int) -> tuple[TrainState, DataPosition]:
        own = torch.load(directory / f"plain_torch_rank{rank}.pt", weights_only=False)
        self.model.load_state_dict(own["model"], strict=False)  # frozen parts come from their source
        self.optimizer.load_state_dict(own["optimizer"])
        self.scheduler.load_state_dict(own["scheduler"])
        return restore_progress(directory, rank)

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """As ZeRO-3 does: the full weights, gathered (here: copied) for rank 0's export."""
        self.exports += 1
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def steps(self) -> list[dict]:
        """Per optimizer step: its m, its micro-batches' losses and the samples it trained on."""
        group = self.stage.gradient_accumulation_steps
        out = []
        for i in range(0, len(self.micro_batches), group):
            micro = self.micro_batches[i : i + group]
            assert len({b["m"] for b in micro}) == 1, "every micro-batch of a step has the step's m"
            out.append(dict(m=micro[0]["m"], losses=[b["loss"] for b in micro], samples=[b["samples"] for b in micro]))
        return out


def sample_ids(batch: dict[str, torch.Tensor]) -> list[int]:
    return [int(row[2]) - SAMPLE_TOKEN for row in batch["input_ids"]]


def training_rows(count: int, seed: int = 0) -> list[dict]:
    """`count` tokenized image samples as the data pipeline hands them to the loop, sample i's id in
    its third token."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        text = rng.integers(3, SAMPLE_TOKEN, size=int(rng.integers(4, 9)))
        ids = np.concatenate([[1, IMAGE_TOKEN_INDEX, SAMPLE_TOKEN + i], text]).astype(np.int64)
        labels = ids.copy()
        labels[:3] = IGNORE_INDEX
        rows.append(
            dict(
                id=str(i),
                has_image=True,
                input_ids=ids,
                labels=labels,
                length=np.int32(len(ids)),
                pixel_values=rng.standard_normal((3, 32, 32)).astype(np.float32),
            )
        )
    return rows


class MemoryShard:
    """Rows in memory with Ray Data's `iter_batches`: a pass in seeded order when a shuffle buffer is
    asked for (the seed is the loop's per-epoch one), in row order otherwise."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def iter_batches(
        self,
        batch_size: int,
        batch_format: str,
        drop_last: bool,
        local_shuffle_buffer_size: int | None,
        local_shuffle_seed: int | None,
    ) -> Iterator[dict]:
        order = np.arange(len(self.rows))
        if local_shuffle_buffer_size:
            order = np.random.default_rng(local_shuffle_seed).permutation(order)
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            yield stack_rows([self.rows[i] for i in order[start : start + batch_size]])


class MemoryContext:
    """A worker context without Ray Train: checkpoints are directories under `root`, all kept and listed
    in `saved` as (step, metrics, directory); `resume_from` is the checkpoint `restored()` gives."""

    def __init__(self, root: Path, rows: list[dict], rank: int = 0, resume_from: Path | None = None) -> None:
        self.root, self.shard, self.resume_from = root, MemoryShard(rows), resume_from
        self.rank, self.world_size, self.device = rank, 1, torch.device("cpu")
        self.saved: list[tuple[int, dict, Path]] = []

    def data_shard(self) -> MemoryShard:
        return self.shard

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        yield self.resume_from

    @contextlib.contextmanager
    def checkpoint(self, step: int, metrics: dict) -> Iterator[Path]:
        directory = self.root / f"checkpoint_{step:07d}"
        directory.mkdir(parents=True)
        yield directory
        self.saved.append((step, dict(metrics), directory))

    def checkpoint_at(self, step: int) -> Path:
        return next(directory for saved, _, directory in self.saved if saved == step)


def small_run(storage: Path, tracking_uri: str, rows: int, name: str = "core", **changes) -> StageRun:
    """A one-worker stage of the small test model over `rows` rows, logging to `tracking_uri`."""
    fields = dict(
        model="small",
        stage="stage2",
        template="vicuna_v1",
        data="in memory",
        global_batch_size=4,
        micro_batch_size=2,
        lr=1e-3,
        shuffle_buffer=8,
        log_every=1000,
        tracking=dict(uri=tracking_uri, log_export=False),
    )
    stage = StageSpec(**{**fields, **changes})
    model = small_spec()
    return StageRun(stage, model, name, str(storage), plan_steps(stage, model, rows), use_gpu=False)
