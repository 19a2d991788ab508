"""The per-worker training loop of both stages (they differ only by config). It knows neither Ray
nor DeepSpeed: the worker context (mqt_llava.train.context) gives rank, device, data shard and
checkpoints, under Ray Train or torchrun; the strategy it is handed (the stage's kind from
mqt_llava.train.strategies, built by `worker_setup`) does the steps.

Per optimizer step: take m for this step from the plan (the same on every rank: a pure function of the step),
run `gradient_accumulation_steps` micro-batches, average the loss over ranks, log on rank 0, and
every `checkpoint_every` steps save a checkpoint on every rank. At the end rank 0 writes the export
(`save_pretrained`, ZeRO-3 weights gathered first).
"""

from __future__ import annotations

import contextlib
import functools
import resource
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import torch
import torch.distributed as dist
import yaml

from mqt_llava.data.batches import LlavaCollate
from mqt_llava.data.samples import modality_grouped_batches
from mqt_llava.model.builder import BuiltModel, build_model
from mqt_llava.model.constants import IMAGE_TOKEN_INDEX
from mqt_llava.model.export import load_part_state, save_export
from mqt_llava.model.stages import CONNECTOR, configure_trainable, format_parameter_report, parameter_report
from mqt_llava.model.storage import resolve_location
from mqt_llava.output import Progress
from mqt_llava.train.checkpoint import DataPosition, TrainState
from mqt_llava.train.context import WorkerContext
from mqt_llava.train.memory import check_fits
from mqt_llava.train.plan import StageRun, resolved_config
from mqt_llava.train.strategies import TrainingStrategy, build_strategy


def worker_setup(run: StageRun, context: WorkerContext) -> TrainingStrategy:
    """A worker's set-up before it joins the process group: its threads, the memory check on its own
    GPU (before anything is allocated on it), and the stage's strategy for the worker's device (for
    DeepSpeed, the one place its accelerator is chosen). What the launchers hand `train_loop`."""
    stage = run.stage
    if stage.resources.torch_threads:
        torch.set_num_threads(stage.resources.torch_threads)
    if run.use_gpu:
        total = torch.cuda.get_device_properties(context.device).total_memory / 2**30
        check_fits(stage, run.model, total, f"{torch.cuda.get_device_name(context.device)}, {total:.1f} GiB")
    return build_strategy(stage, run.use_gpu)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool) -> Iterator[None]:
    """TF32 for float32 matmuls and convolutions while the block runs, then the flags as they were.

    The official runs set it with `--tf32 True` (Hugging Face's TrainingArguments, for the whole
    process). The flags are process-wide, so here they change only around a training loop, in the
    worker process that runs it, and come back even when the loop raises: nothing that imports this
    library, and nothing after the loop in the same process, sees a changed default. False leaves
    torch's own defaults. They act on CUDA only; on the CPU they change nothing."""
    if not enabled:
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def with_stage_precision(loop):
    """Runs a training loop inside `tf32_matmuls(run.stage.tf32)`: the one place the loop's process-wide
    numerics are set (see tf32_matmuls)."""

    @functools.wraps(loop)
    def wrapped(run: StageRun, context: WorkerContext, strategy: TrainingStrategy) -> None:
        with tf32_matmuls(run.stage.tf32):
            return loop(run, context, strategy)

    return wrapped


@with_stage_precision
def train_loop(run: StageRun, context: WorkerContext, strategy: TrainingStrategy) -> None:
    """Train `run` on this worker with `strategy` (built by `worker_setup` for this worker), resuming
    from the context's checkpoint if it has one; rank 0 logs and writes the export at the end."""
    stage, plan = run.stage, run.plan
    rank = context.rank
    strategy.init_distributed()

    built = stage_model(run)
    if rank == 0:
        print(format_parameter_report(parameter_report(built.model)), flush=True)
    strategy.setup(built.model, plan)

    state, position = TrainState(), DataPosition()
    with context.restored() as directory:
        if directory is not None:
            state, position = strategy.load(directory, rank)
            if rank == 0:
                print(f"[{run.name}] resumed at step {state.step}/{plan.total_steps} from {directory}", flush=True)

    tracker = open_tracker(run, resumed_at=state.step if state.step else None) if rank == 0 else None
    with failures_marked(tracker):
        pad_id = built.tokenizer.pad_token_id
        batches = micro_batches(context.data_shard(), run, position, LlavaCollate(pad_id))
        progress = TrainProgress(run.name, plan.total_steps, state.step, stage.log_every) if rank == 0 else None
        while state.step < plan.total_steps:
            m = plan.budget(state.step)
            lr = strategy.lr
            totals = [0.0, 0.0, 0.0, 0.0]  # loss sum, micro-batches, samples, tokens
            for _ in range(stage.gradient_accumulation_steps):
                batch = {k: v.to(context.device) for k, v in next(batches).items()}
                loss = strategy.train_micro_batch(batch, m)
                for i, value in enumerate((loss, 1, len(batch["input_ids"]), count_tokens(batch, m))):
                    totals[i] += value
            sums, peak = reduce_over_ranks(totals, peak_memory_mb(run.use_gpu), context.device)
            totals, peak = sums.tolist(), float(peak)
            state.step += 1
            state.samples += int(totals[2])
            state.tokens += int(totals[3])
            metrics = dict(
                loss=float(totals[0] / totals[1]), lr=lr, m=m, epoch=position.epoch, peak_memory_mb=float(peak)
            )
            grad_norm = strategy.grad_norm()
            if grad_norm is not None:
                metrics["grad_norm"] = grad_norm
            if progress is not None:
                metrics |= progress.update(state.step, int(totals[2]), int(totals[3]), metrics)
                if tracker is not None:
                    tracker.log_metrics(metrics, step=state.step)
            if state.step % stage.checkpoint_every == 0 or state.step == plan.total_steps:
                with context.checkpoint(state.step, metrics) as directory:
                    strategy.save(directory, rank, state, position, resolved_config(run))

        export(strategy, built, run, rank)
        if tracker is not None:
            if stage.tracking.log_export and run.is_local:
                tracker.log_artifact(run.export_dir, "export")
            tracker.finish()


@contextlib.contextmanager
def failures_marked(tracker) -> Iterator[None]:
    """A run that raises ends FAILED in MLflow, not RUNNING forever (a retry reopens it as RUNNING).
    A worker killed outright cannot say so: the driver marks the run when Ray Train gives up on it
    (mqt_llava.train.launch)."""
    try:
        yield
    except BaseException:
        if tracker is not None:
            with contextlib.suppress(Exception):  # the training error is the one to report
                tracker.finish("FAILED")
        raise


def open_tracker(run: StageRun, resumed_at: int | None):
    """Rank 0's MLflow run, with the resolved config logged; None where MLflow is not installed (a
    bare GPU machine under torchrun): the progress lines and the export's training record remain."""
    try:
        from mqt_llava.tracking import RunTracker
    except ImportError:
        print(f"[{run.name}] MLflow is not installed: metrics go to the progress lines only", flush=True)
        return None
    tracker = RunTracker(run.stage.tracking, run.storage, run.name)
    config = resolved_config(run)
    tracker.log_params(config)
    tracker.log_text(yaml.safe_dump(config, sort_keys=False), "config/resolved.yaml")
    if resumed_at is not None:
        tracker.log_metrics({"resumed_from_step": resumed_at}, step=resumed_at)
    return tracker


def stage_model(run: StageRun) -> BuiltModel:
    """The model a stage starts from: the preset's parts (pretrained where configured), the connector of
    `init_from` if given, only the stage's parts trainable, gradient checkpointing if asked."""
    stage = run.stage
    built = build_model(run.model, seed=stage.seed)  # the same random-init parts on every rank
    if stage.init_from:
        # Only the connector's bytes, straight from where the export lives (a local path or a URI):
        # a 7B stage-1 export is 14 GB, its connector under 40 MB (9M parameters), read by every worker.
        built.model.connector.load_state_dict(load_part_state(stage.init_from, CONNECTOR))
    # The LLM's attention kernel (the official: flash_attention_2; SDPA computes the same attention).
    built.model.set_attn_implementation({"text_config": stage.attn_implementation})
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


def reduce_over_ranks(totals: list[float], peak_mb: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's totals summed over ranks and its peak memory maxed, as float64 tensors on `device`,
    the device the loop trains on. They must be there: Ray Train starts NCCL on GPUs, and NCCL serves
    only CUDA tensors ("No backend type associated with device type cpu" for a CPU one)."""
    sums = torch.tensor(totals, dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    peak = torch.tensor([peak_mb], dtype=torch.float64, device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    return sums, peak


def peak_memory_mb(use_gpu: bool) -> float:
    """This worker's peak so far: GPU memory allocated by torch on GPU, else the process's RSS."""
    if use_gpu:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def count_tokens(batch: dict[str, torch.Tensor], m: int) -> int:
    """Tokens the LLM sees: text tokens plus m per image (the placeholder becomes m tokens)."""
    images = int((batch["input_ids"] == IMAGE_TOKEN_INDEX).sum())
    return int(batch["attention_mask"].sum()) + images * (m - 1)


class TrainProgress:
    """Rank 0's progress: a line every `every` steps with this step's rates and an ETA measured over
    this attempt (a resumed attempt does not count restored steps; the first step, which includes
    start-up, does not count either)."""

    def __init__(self, name: str, total: int, start_step: int, every: int) -> None:
        self.name, self.total = name, total
        self.clock = Progress(total, start_step, every=every)
        self.last = time.perf_counter()

    def update(self, step: int, samples: int, tokens: int, metrics: dict) -> dict:
        now = time.perf_counter()
        step_s = max(now - self.last, 1e-9)
        self.last = now
        rates = {"samples_per_s": samples / step_s, "tokens_per_s": tokens / step_s}
        if self.clock.update(step):
            print(
                f"[{self.name}] step {step}/{self.total} loss {metrics['loss']:.4f} m {metrics['m']} "
                f"lr {metrics['lr']:.2e} | {rates['samples_per_s']:.1f} samples/s "
                f"{rates['tokens_per_s']:.0f} tokens/s | {self.clock.eta}",
                flush=True,
            )
        return rates


def export(strategy: TrainingStrategy, built: BuiltModel, run: StageRun, rank: int) -> None:
    """Rank 0 writes the full model with save_pretrained; every rank takes part in gathering the
    weights first (ZeRO-3 partitions them)."""
    state_dict = strategy.export_state_dict()
    if rank != 0:
        return
    with tempfile.TemporaryDirectory(prefix="mqt-export-") as tmp:
        target = Path(run.export_dir) if run.is_local else Path(tmp)
        save_export(built, target, state_dict=state_dict, record=resolved_config(run))
        if not run.is_local:
            filesystem, path = resolve_location(run.export_dir)
            pafs.copy_files(str(target), path, destination_filesystem=filesystem)
    print(f"[{run.name}] export: {run.export_dir}", flush=True)
