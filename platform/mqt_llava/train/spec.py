"""A training stage's spec: data, batch, optimiser, schedule of budgets, checkpoints, resources and
tracking, as a stage YAML (a preset's `stage1.yaml` / `stage2.yaml`) declares them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mqt_llava.config import Spec
from mqt_llava.tracking import TrackingSpec


class ScheduleSpec(Spec):
    """Which budgets m training draws (mqt_llava.model.schedules)."""

    kind: Literal["linear", "log", "fixed"] = "linear"
    step: int = Field(2, ge=1, description="s of the linear schedule {s, 2s, ..., M}")
    seed: int = 0
    tokens: int | None = Field(None, ge=1, description="fixed: train at this m only (default M)")


class ResourcesSpec(Spec):
    """What each Ray Train worker and the data pipeline ask for. CPU figures are logical Ray
    resources; on a small machine they are fractions so workers and data stages fit together."""

    use_gpu: bool | None = Field(None, description="None: use GPUs if the cluster has any")
    worker_cpus: float = Field(1.0, gt=0)
    torch_threads: int | None = Field(None, ge=1, description="None: Ray's OMP_NUM_THREADS for the worker")
    decode_actors: int = Field(1, ge=1)
    decode_cpus: float = Field(0.5, gt=0)
    tokenize_cpus: float = Field(0.25, gt=0)
    gpu_memory_gib: float | None = Field(
        None,
        gt=0,
        description="each GPU's memory: the launcher checks the memory plan against it before "
        "starting (mqt_llava.train.memory); workers check their own GPU in any case",
    )


class StageSpec(Spec):
    """One training stage. Stage 1 trains the MQT on 558K-format data with the plain template;
    stage 2 trains MQT + LLM on 665K-format data with vicuna_v1, drawing m each optimizer step."""

    stage: Literal["stage1", "stage2"]
    template: Literal["plain", "vicuna_v1"]
    data: str = Field(description="Parquet shards written by prepare_llava (path or URI)")
    num_workers: int = Field(1, ge=1)
    global_batch_size: int = Field(ge=1, description="samples per optimizer step, over all workers")
    micro_batch_size: int = Field(ge=1, description="samples per worker per forward pass")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="stop earlier than `epochs` (smoke runs)")
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_grad_norm: float = Field(
        1.0,
        ge=0,
        description="DeepSpeed's gradient_clipping; 0: no clipping (what the official scripts ran: their "
        "ZeRO configs have no gradient_clipping, and DeepSpeed 0.12 defaulted to none)",
    )
    strategy: str = Field(
        "deepspeed",
        description="the training strategy that does the optimizer steps, a kind registered in "
        "mqt_llava.train.strategies (deepspeed: DeepSpeed's engine, ZeRO as zero_stage says)",
    )
    zero_stage: Literal[0, 1, 2, 3] = 2
    bf16: bool = Field(True, description="on GPU; CPU always trains in fp32")
    gradient_checkpointing: bool = False
    tf32: bool = Field(
        False,
        description="TF32 for float32 matmuls and convolutions on GPU (the official --tf32 True), set "
        "for the training loop only and restored after it (mqt_llava.train.loop.tf32_matmuls)",
    )
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = Field(
        "sdpa",
        description="the LLM's attention kernel; flash_attention_2 needs the flash-attn package",
    )
    image_aspect: Literal["pad", "square"] | None = Field(
        None,
        description="this stage's image preprocessing; None: the model's image.aspect. LLaVA-1.5's "
        "stage 1 ran LLaVA's default, square (resize and centre-crop), and its stage 2 pad",
    )
    max_length: int | None = Field(
        None,
        ge=8,
        description="the longest sample this stage trains on (text + M visual tokens): a longer one is "
        "cut at its end, labels with it (a row with no supervised token left is rejected and counted); "
        "None: the model's max_length. Bounds activation memory.",
    )
    schedule: ScheduleSpec = ScheduleSpec()
    stage1_elastic: bool = Field(False, description="stage 1 draws m too (the paper's ablation); else m = M")
    model: str = Field(description="the model: a preset name (its packaged model.yaml) or a YAML path")
    init_from: str | None = Field(None, description="an export whose MQT weights start this stage (stage 2)")
    shuffle_buffer: int = Field(1000, ge=0, description="rows in each worker's local shuffle buffer; 0: none")
    group_by_modality: bool = Field(False, description="LLaVA's group_by_modality_length, on the stream")
    seed: int = 0
    log_every: int = Field(10, ge=1, description="a progress line every N steps (MLflow gets every step)")
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0, description="worker-group restarts before the run fails")
    tracking: TrackingSpec = TrackingSpec()
    resources: ResourcesSpec = ResourcesSpec()

    @field_validator("strategy")
    @classmethod
    def _strategy_registered(cls, kind: str) -> str:
        # Imported here: the registry's DeepSpeed kind imports this module (its stage spec).
        from mqt_llava.train.strategies import strategy_class

        strategy_class(kind)  # a ValueError naming the known kinds
        return kind

    @model_validator(mode="after")
    def _batch_divides(self):
        per_step = self.micro_batch_size * self.num_workers
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be a multiple of micro_batch_size x num_workers "
                f"= {self.micro_batch_size} x {self.num_workers}"
            )
        if (
            self.stage == "stage1"
            and self.template != "plain"
            or self.stage == "stage2"
            and self.template != "vicuna_v1"
        ):
            raise ValueError(
                f"template {self.template!r} does not belong to {self.stage} (stage1: plain, stage2: vicuna_v1)"
            )
        return self

    @property
    def gradient_accumulation_steps(self) -> int:
        """Derived, so the same config is the same optimisation on 1 or 64 workers."""
        return self.global_batch_size // (self.micro_batch_size * self.num_workers)
