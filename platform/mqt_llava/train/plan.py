"""A stage run, fully resolved in the driver before any worker starts: the configs, where it
lives, and how many optimizer steps it takes.

Every rank must take the same number of optimizer steps (a rank that stops early leaves the others
waiting in a collective). Ray Train splits the dataset into equal streaming shards (`equal=True`:
floor(rows / workers) rows each), so the plan is computed from the row count once, here:

    micro-batches per epoch per rank = floor(rows / workers) // micro_batch_size
    steps per epoch                  = micro-batches per epoch // gradient accumulation
    total steps                      = ceil(epochs x steps per epoch), capped by max_steps

A rank that reaches the end of its shard starts the next epoch, so a fractional epoch count or a
few rows rejected at tokenization never leaves a rank short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mqt_llava.config import ModelSpec, StageSpec
from mqt_llava.model.schedules import TokenSchedule


@dataclass(frozen=True)
class StagePlan:
    rows: int
    micro_batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def plan_steps(stage: StageSpec, rows: int) -> StagePlan:
    per_rank = rows // stage.num_workers
    micro = per_rank // stage.micro_batch_size
    steps_per_epoch = micro // stage.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"{rows} rows are fewer than one optimizer step: global_batch_size {stage.global_batch_size} "
            f"({stage.num_workers} workers x micro_batch_size {stage.micro_batch_size} x accumulation "
            f"{stage.gradient_accumulation_steps}); use more data or a smaller batch"
        )
    total = math.ceil(stage.epochs * steps_per_epoch)
    if stage.max_steps is not None:
        total = min(total, stage.max_steps)
    warmup = max(1, round(stage.warmup_ratio * total))
    return StagePlan(rows, micro, steps_per_epoch, total, warmup)


@dataclass(frozen=True)
class StageRun:
    """What the driver hands every worker."""

    stage: StageSpec
    model: ModelSpec
    name: str
    storage: str  # local directory or URI; the run lives at <storage>/<name>
    plan: StagePlan
    use_gpu: bool

    @property
    def run_dir(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"

    @property
    def export_dir(self) -> str:
        return f"{self.run_dir}/export"

    @property
    def is_local(self) -> bool:
        return "://" not in self.storage

    def budget(self, step: int) -> int:
        """m for optimizer step `step`: drawn from the schedule (pure in seed and step, so every
        rank agrees without communicating) in stage 2 and elastic stage 1; else M."""
        M = self.model.mqt.num_queries
        if self.stage.stage == "stage1" and not self.stage.stage1_elastic:
            return M
        return token_schedule(self.stage, self.model).draw(step)


def token_schedule(stage: StageSpec, model: ModelSpec) -> TokenSchedule:
    """The stage's schedule over 1..M (raises ValueError for one that cannot be drawn from)."""
    s = stage.schedule
    return TokenSchedule(s.kind, model.mqt.num_queries, step=s.step, seed=s.seed, tokens=s.tokens)


def resolved_config(run: StageRun) -> dict:
    """The whole resolved config, as logged to MLflow and written beside the export."""
    return dict(
        name=run.name,
        storage=run.storage,
        use_gpu=run.use_gpu,
        plan=run.plan.__dict__,
        stage=run.stage.model_dump(),
        model=run.model.model_dump(),
    )
