"""A memory plan before launch: per-GPU memory of a stage, from its config alone, and whether it fits.

    python jobs/memory_plan.py --config llava-7b/stage2 --set resources.gpu_memory_gib=40

The model is built on the meta device (no weights, no download) to count its parameters: those the
stage trains, those it keeps frozen, and the largest layer. Then, per GPU:

- model states of the trained parameters: DeepSpeed's own estimators for the ZeRO stage
  (bf16 weights, fp32 gradients, master weights and AdamW moments; ZeRO-2 partitions the last
  three, ZeRO-3 all of them plus gathering buffers of 4 bytes per parameter of the largest layer);
- frozen parameters in bf16: replicated on every GPU under ZeRO-0..2, partitioned under ZeRO-3;
- activations of one micro-batch at the stage's longest sequence (`max_length`: text plus the M
  visual tokens reserved per sample; longer samples are rejected by the data pipeline), for a
  Llama-shaped decoder in bf16 with SDPA attention:
    per token and layer  34 h + 8 i bytes (RMSNorm inputs kept in fp32, q/k/v and their rotary
                         copies, attention output, the SwiGLU MLP's four i-wide tensors);
    gradient checkpointing keeps 2 h bytes per layer (its input) plus one layer being recomputed;
    logits               12 bytes per vocabulary entry per token (the fp32 log-softmax the loss
                         keeps, and the backward's fp32 gradient and its bf16 copy);
    the vision tower     runs without gradients: its hidden states of every layer for the
                         micro-batch's images (the model picks one layer from them);
    the connector        12 bytes per grid feature and channel (its keys, values and their grads);
- a reserve: 2 GiB (CUDA context, NCCL buffers) plus 10 % of the rest (allocator fragmentation).

Activation and reserve terms are this module's estimates; `benchmarks/gpu_check.py` prints a
measured peak beside them on a GPU. When a run does not fit, the plan names what to change (and what
that would give): gradient checkpointing, a smaller micro-batch (accumulation keeps the global
batch), ZeRO-3, more GPUs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mqt_llava.config import ConfigError
from mqt_llava.model.spec import ModelSpec
from mqt_llava.train.spec import StageSpec

GIB = 2**30
RESERVE_BYTES = 2 * GIB
RESERVE_SHARE = 0.10


@dataclass(frozen=True)
class Line:
    what: str
    bytes: float
    how: str

    @property
    def gib(self) -> float:
        return self.bytes / GIB


@dataclass(frozen=True)
class ModelCounts:
    """What the plan needs to know of a model, counted once on the meta device."""

    trained: int
    frozen: int
    largest_layer: int  # parameters of the largest module holding parameters itself
    llm_layers: int
    hidden: int
    intermediate: int
    vocab: int
    vision_layers: int
    vision_width: int
    grid: int  # N, grid features per image

    @classmethod
    def of(cls, model: ModelSpec, stage: str) -> ModelCounts:
        import torch

        from mqt_llava.model.builder import build_model
        from mqt_llava.model.stages import configure_trainable

        built = build_model(model, device="meta").model
        configure_trainable(built, stage)
        trained = sum(p.numel() for p in built.parameters() if p.requires_grad)
        total = sum(p.numel() for p in built.parameters())
        largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in built.modules())
        text, vision = built.config.text_config, built.config.vision_config
        del built, torch
        return cls(
            trained=trained,
            frozen=total - trained,
            largest_layer=largest,
            llm_layers=text.num_hidden_layers,
            hidden=text.hidden_size,
            intermediate=text.intermediate_size,
            vocab=text.vocab_size,
            vision_layers=vision.num_hidden_layers,
            vision_width=vision.hidden_size,
            grid=(vision.image_size // vision.patch_size) ** 2,
        )


@dataclass(frozen=True)
class MemoryPlan:
    stage: StageSpec
    gpu_memory_gib: float
    sequence_length: int
    lines: tuple[Line, ...]
    advice: tuple[str, ...]

    @property
    def total_gib(self) -> float:
        return sum(line.bytes for line in self.lines) / GIB

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.gpu_memory_gib

    def table(self) -> str:
        s = self.stage
        head = (
            f"{s.stage} on {s.num_workers} GPU(s) of {self.gpu_memory_gib:g} GiB: ZeRO-{s.zero_stage}, micro-batch "
            f"{s.micro_batch_size} x {self.sequence_length} tokens, gradient checkpointing "
            f"{'on' if s.gradient_checkpointing else 'off'}"
        )
        rows = [head, "", "| per GPU | GiB | how |", "|---|---:|---|"]
        rows += [f"| {line.what} | {line.gib:.1f} | {line.how} |" for line in self.lines]
        rows.append(f"| **total** | **{self.total_gib:.1f}** | of {self.gpu_memory_gib:g} GiB |")
        return "\n".join(rows)

    def verdict(self) -> str:
        if self.fits:
            return f"fits: {self.total_gib:.1f} of {self.gpu_memory_gib:g} GiB per GPU"
        return f"does not fit: {self.total_gib:.1f} GiB per GPU of {self.gpu_memory_gib:g}. Change: " + "; or ".join(
            self.advice or ("more GPU memory",)
        )


def model_state_bytes(counts: ModelCounts, zero_stage: int, gpus: int) -> tuple[Line, Line]:
    """(trained parameters' states from DeepSpeed's estimators, frozen parameters in bf16) per GPU."""
    # The estimators are arithmetic and touch no device. Importing them imports DeepSpeed, which then
    # picks its accelerator for this process from the hardware; nothing here may steer that choice: a
    # GPU worker runs this check before its training strategy (mqt_llava.train.strategies.deepspeed.deepspeed_on).
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    p = counts.trained
    if zero_stage == 3:
        _, trained, _ = estimate_zero3_model_states_mem_needs(
            p, counts.largest_layer, num_gpus_per_node=gpus, cpu_offload=False, cpu_offload_params=False
        )
        how = f"DeepSpeed's ZeRO-3 estimator: {p / 1e9:.2f} B trained params, largest layer {counts.largest_layer:,}"
        frozen = 2 * counts.frozen / gpus
        frozen_how = f"{counts.frozen / 1e9:.2f} B in bf16, partitioned over {gpus}"
    elif zero_stage == 2:
        _, trained = estimate_zero2_model_states_mem_needs(p, num_gpus_per_node=gpus, cpu_offload=False)
        how = f"DeepSpeed's ZeRO-2 estimator: {p / 1e9:.2f} B trained params"
        frozen, frozen_how = 2 * counts.frozen, f"{counts.frozen / 1e9:.2f} B in bf16, on every GPU"
    else:  # DeepSpeed has no estimator for 0 and 1: counted unpartitioned (an upper bound for ZeRO-1)
        trained = 20 * p
        how = f"{p / 1e9:.2f} B trained params x 20 bytes, unpartitioned (ZeRO-{zero_stage})"
        frozen, frozen_how = 2 * counts.frozen, f"{counts.frozen / 1e9:.2f} B in bf16, on every GPU"
    return Line("trained parameters' states", trained, how), Line("frozen parameters", frozen, frozen_how)


def activation_lines(counts: ModelCounts, micro: int, length: int, checkpointing: bool) -> list[Line]:
    h, i, layers, tokens = counts.hidden, counts.intermediate, counts.llm_layers, micro * length
    per_layer = 34 * h + 8 * i
    if checkpointing:
        decoder = tokens * (layers * 2 * h + per_layer)
        how = f"{tokens:,} tokens x ({layers} layers x 2h + one layer's {per_layer:,} B recomputed)"
    else:
        decoder = tokens * layers * per_layer
        how = f"{tokens:,} tokens x {layers} layers x (34h + 8i = {per_layer:,} B)"
    return [
        Line("decoder activations", decoder, how),
        Line("logits and loss", tokens * 12 * counts.vocab, f"{tokens:,} tokens x 12 B x {counts.vocab:,} entries"),
        Line(
            "vision tower (no grad)",
            micro * (counts.vision_layers + 1) * (counts.grid + 1) * counts.vision_width * 2,
            f"{micro} images x {counts.vision_layers + 1} hidden states x {counts.grid + 1} x {counts.vision_width}",
        ),
        Line("connector", micro * counts.grid * max(counts.vision_width, h) * 12, f"{micro} x {counts.grid} features"),
    ]


def plan_memory(
    stage: StageSpec, model: ModelSpec, gpu_memory_gib: float, counts: ModelCounts | None = None, advise: bool = True
) -> MemoryPlan:
    """Per-GPU memory of `stage` on GPUs of `gpu_memory_gib` each, one per worker."""
    counts = counts or ModelCounts.of(model, stage.stage)
    length = stage.max_length or model.max_length
    lines = [
        *model_state_bytes(counts, stage.zero_stage, stage.num_workers),
        *activation_lines(counts, stage.micro_batch_size, length, stage.gradient_checkpointing),
    ]
    rest = sum(line.bytes for line in lines)
    lines.append(Line("reserve", RESERVE_BYTES + RESERVE_SHARE * rest, "2 GiB (CUDA, NCCL) + 10 % (fragmentation)"))
    plan = MemoryPlan(stage, gpu_memory_gib, length, tuple(lines), ())
    if plan.fits or not advise:
        return plan
    return dataclasses.replace(plan, advice=tuple(advice(stage, model, gpu_memory_gib, counts)))


def advice(stage: StageSpec, model: ModelSpec, gpu_memory_gib: float, counts: ModelCounts) -> list[str]:
    """What would make the run fit, each with the figure it would give; the first that fits alone
    comes first."""

    def retry(**changes) -> MemoryPlan:
        return plan_memory(stage.model_copy(update=changes), model, gpu_memory_gib, counts, advise=False)

    out = []
    checkpointing = {} if stage.gradient_checkpointing else {"gradient_checkpointing": True}
    if checkpointing:
        out.append(f"gradient_checkpointing: true ({retry(**checkpointing).total_gib:.1f} GiB)")
    per_worker = stage.global_batch_size // stage.num_workers
    for micro in sorted((d for d in range(1, stage.micro_batch_size) if per_worker % d == 0), reverse=True):
        smaller = retry(micro_batch_size=micro, **checkpointing)
        if smaller.fits:
            both = " with gradient checkpointing" if checkpointing else ""
            out.append(
                f"micro_batch_size: {micro}{both} (accumulation {per_worker // micro}; the global batch stays; "
                f"{smaller.total_gib:.1f} GiB)"
            )
            break
    if stage.zero_stage < 3:
        both = " with gradient checkpointing" if checkpointing else ""
        out.append(f"zero_stage: 3{both} ({retry(zero_stage=3, **checkpointing).total_gib:.1f} GiB)")
    if not out:
        out.append("more GPUs (ZeRO-3 partitions the model states further) or GPUs with more memory")
    return out


class DoesNotFit(ConfigError):
    pass


def check_fits(stage: StageSpec, model: ModelSpec, gpu_memory_gib: float, where: str) -> MemoryPlan:
    """The plan, or DoesNotFit naming what to change (`where`: whose memory figure it is)."""
    plan = plan_memory(stage, model, gpu_memory_gib)
    if not plan.fits:
        raise DoesNotFit(f"memory plan ({where}): {plan.verdict()}\n{plan.table()}")
    return plan
