"""The per-worker training loop of both stages (they differ only by config), run by Ray Train.

Per optimizer step: draw m for this step (the same on every rank: a pure function of the step),
run `gradient_accumulation_steps` micro-batches through the DeepSpeed engine, average the loss over
ranks, log on rank 0, and every `checkpoint_every` steps save and report a checkpoint on every rank.
At the end rank 0 writes the export (`save_pretrained`, ZeRO-3 weights gathered first).
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import yaml
from transformers import get_cosine_schedule_with_warmup

from mqt_llava.data.datasets import LlavaCollate, modality_grouped_batches
from mqt_llava.data.llava_format import resolve_location
from mqt_llava.model.builder import BuiltModel, build_model
from mqt_llava.model.export import load_part_state, save_export
from mqt_llava.model.modeling import IMAGE_TOKEN_INDEX
from mqt_llava.model.stages import configure_trainable, format_parameter_report, parameter_report
from mqt_llava.tracking import RunTracker
from mqt_llava.train import checkpoint
from mqt_llava.train.checkpoint import DataPosition, TrainState
from mqt_llava.train.deepspeed_config import deepspeed_config
from mqt_llava.train.plan import StageRun, resolved_config


def train_loop(config: dict) -> None:
    run: StageRun = config["run"]
    stage, plan = run.stage, run.plan
    context = ray.train.get_context()
    rank = context.get_world_rank()
    if not run.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if stage.resources.torch_threads:
        torch.set_num_threads(stage.resources.torch_threads)
    import deepspeed  # after DS_ACCELERATOR: DeepSpeed picks its accelerator once

    # DeepSpeed 0.19 calls collectives torch 2.13 deprecated, once per step each.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)

    deepspeed.init_distributed(dist_backend="nccl" if run.use_gpu else "gloo")  # reuses Ray's group
    device = ray.train.torch.get_device()

    built = stage_model(run)
    if rank == 0:
        print(format_parameter_report(parameter_report(built.model)), flush=True)

    params = [p for p in built.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=built.model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(stage, run.use_gpu)
    )

    state, position = TrainState(), DataPosition()
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as directory:
            state, position = checkpoint.restore(engine, Path(directory), rank)
        if rank == 0:
            print(f"[{run.name}] resumed at step {state.step}/{plan.total_steps} from {restored.path}", flush=True)

    tracker = RunTracker(stage.tracking, run.storage, run.name) if rank == 0 else None
    if tracker is not None:
        config = resolved_config(run)
        tracker.log_params(config)
        tracker.log_text(yaml.safe_dump(config, sort_keys=False), "config/resolved.yaml")
        if restored is not None:
            tracker.log_metrics({"resumed_from_step": state.step}, step=state.step)

    pad_id = built.tokenizer.pad_token_id
    batches = micro_batches(ray.train.get_dataset_shard("train"), run, position, LlavaCollate(pad_id))
    progress = Progress(run.name, plan.total_steps, state.step, stage.log_every) if rank == 0 else None
    engine.train()
    while state.step < plan.total_steps:
        m = run.budget(state.step)
        lr = optimizer.param_groups[0]["lr"]
        totals = torch.zeros(4, dtype=torch.float64)  # loss sum, micro-batches, samples, tokens
        for _ in range(stage.gradient_accumulation_steps):
            batch = {k: v.to(device) for k, v in next(batches).items()}
            loss = engine(**batch, num_visual_tokens=m).loss
            engine.backward(loss)
            engine.step()
            totals += torch.tensor([loss.item(), 1, len(batch["input_ids"]), count_tokens(batch, m)])
        dist.all_reduce(totals)  # gloo/nccl both take float64 sums
        peak = torch.tensor([peak_memory_mb(run.use_gpu)], dtype=torch.float64)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        state.step += 1
        state.samples += int(totals[2])
        state.tokens += int(totals[3])
        metrics = dict(loss=float(totals[0] / totals[1]), lr=lr, m=m, epoch=position.epoch, peak_memory_mb=float(peak))
        grad_norm = engine.get_global_grad_norm()
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        if progress is not None:
            metrics |= progress.update(state.step, int(totals[2]), int(totals[3]), metrics)
            tracker.log_metrics(metrics, step=state.step)
        if state.step % stage.checkpoint_every == 0 or state.step == plan.total_steps:
            report_checkpoint(engine, rank, state, position, metrics)

    export(engine, built, run, rank)
    if tracker is not None:
        if stage.tracking.log_export and run.is_local:
            tracker.log_artifact(run.export_dir, "export")
        tracker.finish()


def stage_model(run: StageRun) -> BuiltModel:
    """The model a stage starts from: the preset's parts (pretrained where configured), the MQT of
    `init_from` if given, only the stage's parts trainable, gradient checkpointing if asked."""
    stage = run.stage
    torch.manual_seed(stage.seed)  # the same random-init parts on every rank
    built = build_model(run.model)
    if stage.init_from:
        built.model.mqt.load_state_dict(load_part_state(local_copy(stage.init_from), "mqt"))
    configure_trainable(built.model, stage.stage)
    if stage.gradient_checkpointing:
        built.model.language_model.activation_checkpointing_enable()
    return built


def micro_batches(shard, run: StageRun, position: DataPosition, collate: LlavaCollate) -> Iterator[dict]:
    """This rank's micro-batches, epoch after epoch, starting at `position` (updated as batches
    are consumed). Each epoch's local shuffle is seeded by (seed, epoch), so a resumed epoch
    replays the same pass before skipping what was consumed (see mqt_llava.train.checkpoint)."""
    stage = run.stage
    size = stage.micro_batch_size
    while True:
        seed = stage.seed + position.epoch
        numpy_batches = shard.iter_batches(
            batch_size=size,
            batch_format="numpy",
            drop_last=True,
            local_shuffle_buffer_size=stage.shuffle_buffer or None,
            local_shuffle_seed=seed,
        )
        if stage.group_by_modality:
            grouped = modality_grouped_batches(numpy_batches, size, seed=seed)
            numpy_batches = (b for b in grouped if len(b["length"]) == size)
        skip, seen = position.batches_in_epoch, 0
        for numpy_batch in numpy_batches:
            seen += 1
            if seen <= skip:
                continue
            position.batches_in_epoch = seen
            yield collate(numpy_batch)
        if seen == 0:
            raise RuntimeError(f"this worker's data shard holds no full micro-batch of {size} rows")
        position.epoch += 1
        position.batches_in_epoch = 0


def peak_memory_mb(use_gpu: bool) -> float:
    """This worker's peak so far: GPU memory allocated by torch on GPU, else the process's RSS."""
    if use_gpu:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def count_tokens(batch: dict[str, torch.Tensor], m: int) -> int:
    """Tokens the LLM sees: text tokens plus m per image (the placeholder becomes m tokens)."""
    images = int((batch["input_ids"] == IMAGE_TOKEN_INDEX).sum())
    return int(batch["attention_mask"].sum()) + images * (m - 1)


class Progress:
    """Rank 0's progress: rates over this attempt (a resumed attempt does not count restored steps),
    a line every `every` steps with an ETA."""

    def __init__(self, name: str, total: int, start_step: int, every: int) -> None:
        self.name, self.total, self.start_step, self.every = name, total, start_step, every
        self.started = self.last = time.perf_counter()

    def update(self, step: int, samples: int, tokens: int, metrics: dict) -> dict:
        now = time.perf_counter()
        step_s = max(now - self.last, 1e-9)
        self.last = now
        rates = {"samples_per_s": samples / step_s, "tokens_per_s": tokens / step_s}
        if step % self.every == 0 or step == self.total:
            per_step = (now - self.started) / max(step - self.start_step, 1)
            eta = per_step * (self.total - step)
            print(
                f"[{self.name}] step {step}/{self.total} loss {metrics['loss']:.4f} m {metrics['m']} "
                f"lr {metrics['lr']:.2e} | {rates['samples_per_s']:.1f} samples/s "
                f"{rates['tokens_per_s']:.0f} tokens/s | ETA {format_seconds(eta)}",
                flush=True,
            )
        return rates


def format_seconds(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def report_checkpoint(engine, rank: int, state: TrainState, position: DataPosition, metrics: dict) -> None:
    """Every rank saves its part into a local directory and reports it; Ray merges them into one
    checkpoint directory in the run's storage and keeps the last `keep_checkpoints`."""
    with tempfile.TemporaryDirectory(prefix="mqt-checkpoint-") as directory:
        checkpoint.save(engine, Path(directory), rank, state, position)
        ray.train.report(
            {**metrics, "step": state.step},
            checkpoint=ray.train.Checkpoint.from_directory(directory),
            checkpoint_dir_name=f"checkpoint_{state.step:07d}",
        )


def export(engine, built: BuiltModel, run: StageRun, rank: int) -> None:
    """Rank 0 writes the full model with save_pretrained. Under ZeRO-3 every rank takes part in
    gathering the partitioned weights first (the same call HF's Trainer uses)."""
    state_dict = engine._zero3_consolidated_16bit_state_dict() if run.stage.zero_stage == 3 else None
    if rank != 0:
        return
    with tempfile.TemporaryDirectory(prefix="mqt-export-") as tmp:
        target = Path(run.export_dir) if run.is_local else Path(tmp)
        save_export(built, target, state_dict=state_dict, record=resolved_config(run))
        if not run.is_local:
            filesystem, path = resolve_location(run.export_dir)
            pafs.copy_files(str(target), path, destination_filesystem=filesystem)
    print(f"[{run.name}] export: {run.export_dir}", flush=True)


def local_copy(location: str) -> str:
    """An export directory on this machine: a local path as is, a URI downloaded to a temp dir."""
    if "://" not in location:
        return location
    filesystem, path = resolve_location(location)
    target = tempfile.mkdtemp(prefix="mqt-init-")
    pafs.copy_files(path, target, source_filesystem=filesystem)
    return target
