"""Training throughput against the physical limit, measured side by side in one run: the platform's
path and a bare loop doing the same arithmetic on the same batches, alternated in rounds.

    python benchmarks/train_throughput.py --quickstart runs/quickstart   # the quickstart's stage-2 workload
    python benchmarks/train_throughput.py                                # synthetic corpus, byte-level tokenizer
    python benchmarks/train_throughput.py --quickstart runs/quickstart --steps 30 --rounds 3 --set zero_stage=0

The workload is the tiny preset's stage 2 as the quickstart runs it (global batch 32 = 2 micro-batches
of 16, modality-grouped, m drawn each step, 2 torch threads), for --steps optimizer steps:
- with --quickstart: the quickstart's instruction JSON and images, tokenized by its trained
  tokenizer (read from its stage-2 export); the vision tower, connector and LLM are the preset's
  architecture with seeded random weights (the same arithmetic as the trained ones);
- without: the toy world's synthetic corpus and the untrained byte-level tokenizer (about 3x the
  tokens per sample), everything random-init.

Variants, each from the same seeded initial weights, over the same micro-batches in the same order
(the pipeline keeps its order: launch.ingest_options):
1. bare:      the physical limit: the micro-batches the platform consumes, collated in memory before
              the clock starts; forward, backward, clip, torch AdamW, cosine schedule. Nothing else.
2. deepspeed: the platform's strategy (DeepSpeed ZeRO as configured) in this process over the same
              in-memory batches: the training calls the platform's loop makes, without Ray.
3. streamed:  the bare loop fed by the same Ray Data pipeline, iterated in this process: the cost of
              decoding and tokenizing on the same two cores as the arithmetic.
4. platform:  jobs/stage2.py's path: Ray Train V2, 1 worker, DeepSpeed ZeRO as configured, the
              pipeline as the worker's shard, MLflow logging, a checkpoint and the export at the end.

Rounds alternate the order of the variants. Samples/s is per optimizer step after the first
--warmup steps (start-up excluded), median over steps; the figure per variant is its median round,
with the range over rounds of its ratio to the bare loop of the same round. Every variant's
per-step losses are compared with the bare loop's: they must agree (same batches, same updates).
Every process's CPU time is sampled every 2 s, and each variant's steps after the warm-up are split
into the cores its arithmetic's process used and those the rest of the machine used.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import torch
from cpu_account import DRIVER, CpuSampler
from ray.data import DataContext
from synthetic_shards import RANDOM_INIT, prepared_shards, synthetic_shards
from transformers import get_cosine_schedule_with_warmup

from mqt_llava.config import load_config, prefixed, preset_path
from mqt_llava.data.batches import LlavaCollate
from mqt_llava.model.spec import ModelSpec
from mqt_llava.model.tokenizer import load_tokenizer
from mqt_llava.ray_runtime import init_ray
from mqt_llava.toy.corpus import INSTRUCT_JSON
from mqt_llava.tracking import RUN_NAME_TAG
from mqt_llava.train.checkpoint import DataPosition
from mqt_llava.train.launch import ingest_options, run_stage, stage_dataset
from mqt_llava.train.loop import micro_batches, stage_model
from mqt_llava.train.plan import StageRun, resolve_run
from mqt_llava.train.strategies.deepspeed import DeepSpeedStrategy

LOSS_TOLERANCE = 1e-3  # per-step loss, absolute: float32 sums in another order drift this little
WORKER = "ray::RayTrainWorker"  # in the CPU account


def arithmetic(variant: str) -> str:
    """The process that does a variant's arithmetic: the Train worker for the platform, else this one."""
    return WORKER if variant == "platform" else DRIVER


@dataclass
class Trace:
    """One variant's run: seconds, loss and end time (time.time()) of every optimizer step."""

    seconds: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)

    def add(self, seconds: float, loss: float) -> None:
        self.seconds.append(seconds)
        self.losses.append(loss)
        self.ends.append(time.time())


def workload(quickstart: Path | None, root: Path) -> tuple[str, list[str], str]:
    """(shards, model overrides, description) of the workload asked for."""
    if quickstart is None:
        spec = load_config(ModelSpec, preset_path("tiny"), RANDOM_INIT)
        return synthetic_shards(spec, root, 1200), RANDOM_INIT, "synthetic corpus (1,200 records), byte-level tokenizer"
    export, data = quickstart / "train" / "tiny-stage2" / "export", quickstart / "data"
    if not (export / "tokenizer.json").exists() or not (data / INSTRUCT_JSON).exists():
        raise SystemExit(f"no quickstart run at {quickstart}: run python jobs/quickstart.py first")
    model = [f"tokenizer.pretrained={export.resolve()}", *RANDOM_INIT[1:]]
    spec = load_config(ModelSpec, preset_path("tiny"), model)
    what = f"the quickstart's instruction data and tokenizer ({quickstart}), random-init weights"
    return prepared_shards(spec, data / INSTRUCT_JSON, data, root / "shards"), model, what


def stage_run(shards: str, model: list[str], root: Path, name: str, args) -> StageRun:
    overrides = [
        f"data={shards}",
        "init_from=null",
        f"max_steps={args.steps}",
        f"checkpoint_every={10 * args.steps}",
        f"log_every={args.steps}",
        "tracking.log_export=false",
        *args.set,
    ]
    return resolve_run(
        preset_path("tiny", "stage2"), overrides + prefixed("model", model), name=name, storage=str(root / "runs")
    )


def pipeline(run: StageRun):
    """The dataset the platform hands its worker (launch.trainer_for), with the same ingest options
    (set on this dataset's own context, not the process's)."""
    dataset = stage_dataset(run)
    dataset.context.execution_options = ingest_options()
    return dataset


def platform_batches(run: StageRun, pad_id: int, materialized: bool = False):
    """The worker's micro-batches (loop.micro_batches over the pipeline), in its order; from the
    pipeline run to its end first if `materialized` (then nothing of it runs on afterwards)."""
    dataset = pipeline(run)
    return micro_batches(dataset.materialize() if materialized else dataset, run, DataPosition(), LlavaCollate(pad_id))


def timed_steps(run: StageRun, train_step) -> Trace:
    """Every optimizer step of the run's plan, timed: `train_step(step)` takes it and returns its loss."""
    trace = Trace()
    last = time.perf_counter()
    for step in range(run.plan.total_steps):
        loss = train_step(step)
        now = time.perf_counter()
        trace.add(now - last, loss)
        last = now
    return trace


def bare_loop(run: StageRun, batches) -> Trace:
    """The training arithmetic and nothing else, timed step by step. `batches(pad_id)` is a generator
    of micro-batches, closed at the end."""
    stage, plan = run.stage, run.plan
    torch.set_num_threads(stage.resources.torch_threads)
    built = stage_model(run)
    model = built.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)
    accumulate = stage.gradient_accumulation_steps
    with contextlib.closing(batches(built.tokenizer.pad_token_id)) as stream:

        def train_step(step: int) -> float:
            total = 0.0
            for _ in range(accumulate):
                loss = model(**next(stream), num_visual_tokens=run.plan.budget(step)).loss
                (loss / accumulate).backward()
                total += loss.item()
            torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            return total / accumulate

        return timed_steps(run, train_step)


def deepspeed_loop(run: StageRun, batches: list[dict]) -> Trace:
    """The platform's strategy (DeepSpeed, as configured) in this process over the in-memory batches:
    the training calls the platform's loop makes, without Ray Train, the pipeline or MLflow."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29531", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    stage = run.stage
    torch.set_num_threads(stage.resources.torch_threads)
    strategy = DeepSpeedStrategy(stage, use_gpu=False)
    strategy.init_distributed()
    built = stage_model(run)
    strategy.setup(built.model, run.plan)
    stream = iter(batches)
    accumulate = stage.gradient_accumulation_steps

    def train_step(step: int) -> float:
        return (
            sum(strategy.train_micro_batch(next(stream), run.plan.budget(step)) for _ in range(accumulate)) / accumulate
        )

    return timed_steps(run, train_step)


def platform(run: StageRun) -> Trace:
    """The platform's run, its per-step rates and losses read back from MLflow as it logged them."""
    run_stage(run)
    client = mlflow.MlflowClient(f"sqlite:///{run.storage}/mlflow.db")
    experiment = client.get_experiment_by_name(run.stage.tracking.experiment)
    (found,) = client.search_runs([experiment.experiment_id], f"tags.`{RUN_NAME_TAG}` = '{run.name}'")

    def history(key: str) -> list:
        return sorted(client.get_metric_history(found.info.run_id, key), key=lambda m: m.step)

    rates, losses = history("samples_per_s"), history("loss")
    return Trace(
        [run.stage.global_batch_size / m.value for m in rates],
        [m.value for m in losses],
        [m.timestamp / 1000 for m in rates],
    )


def pad_id(run: StageRun) -> int:
    return load_tokenizer(run.model.tokenizer).pad_token_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quickstart", type=Path, help="a jobs/quickstart.py run directory (its data and tokenizer)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["bare", "deepspeed", "streamed", "platform"],
        choices=["bare", "deepspeed", "streamed", "platform"],
        help="bare is always run",
    )
    parser.add_argument("--set", nargs="*", default=[], help="stage overrides for every variant, e.g. zero_stage=3")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/train_throughput.json"))
    args = parser.parse_args()

    init_ray(num_cpus=2)
    DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        root = Path(tmp)
        shards, model, what = workload(args.quickstart, root)
        base = stage_run(shards, model, root, "bare", args)
        stage = base.stage
        print(
            f"workload: {what}; {args.steps} steps of {stage.global_batch_size} samples ("
            f"{stage.gradient_accumulation_steps} x {stage.micro_batch_size}), grouped by modality: "
            f"{stage.group_by_modality}, ZeRO-{stage.zero_stage}, {stage.resources.torch_threads} threads",
            flush=True,
        )
        needed = args.steps * stage.gradient_accumulation_steps
        start = time.perf_counter()
        with contextlib.closing(platform_batches(base, pad_id(base), materialized=True)) as stream:
            in_memory = list(itertools.islice(stream, needed))
        tokens = sum(int(b["attention_mask"].sum()) for b in in_memory)
        padded = sum(b["attention_mask"].numel() for b in in_memory)
        print(
            f"batches: {needed} micro-batches collated in memory in {time.perf_counter() - start:.1f} s; "
            f"{tokens / (needed * stage.micro_batch_size):.0f} text tokens per sample, "
            f"{1 - tokens / padded:.1%} padding",
            flush=True,
        )
        everything = {
            "bare": lambda run: bare_loop(run, lambda pad: (batch for batch in in_memory)),
            "deepspeed": lambda run: deepspeed_loop(run, in_memory),
            "streamed": lambda run: bare_loop(run, lambda pad: platform_batches(run, pad)),
            "platform": platform,
        }
        variants = {name: measure for name, measure in everything.items() if name == "bare" or name in args.variants}
        seconds: dict[str, list[float]] = {name: [] for name in variants}  # median step per round
        losses: dict[str, list[float]] = {}
        cpu: dict[str, dict[str, float]] = {name: defaultdict(float) for name in variants}  # CPU seconds
        covered: dict[str, float] = defaultdict(float)
        with CpuSampler() as sampler:
            for r in range(args.rounds):
                for name in variants if r % 2 == 0 else reversed(variants):
                    run = stage_run(shards, model, root, f"{name}-{r}", args)
                    trace = variants[name](run)
                    seconds[name].append(statistics.median(trace.seconds[args.warmup :]))
                    losses.setdefault(name, trace.losses)
                    span, cores = sampler.cores(trace.ends[args.warmup], trace.ends[-1])
                    covered[name] += span
                    for kind, used in cores.items():
                        cpu[name][kind] += used * span
                    print(
                        f"round {r + 1}/{args.rounds} {name}: {stage.global_batch_size / seconds[name][-1]:.2f} "
                        f"samples/s (median step {seconds[name][-1]:.3f} s), final loss {trace.losses[-1]:.4f}; "
                        f"{cores.get(arithmetic(name), 0):.2f} cores to the arithmetic, "
                        f"{sum(cores.values()):.2f} in all",
                        flush=True,
                    )

    gaps = {name: max(abs(a - b) for a, b in zip(loss, losses["bare"], strict=True)) for name, loss in losses.items()}
    print(f"\nlosses: per-step difference from the bare loop at most {json.dumps(gaps)} (tolerance {LOSS_TOLERANCE})")
    print(f"{'':10}{'samples/s':>10}{'of bare (median, range over rounds)':>38}")
    results = {}
    for name, times in seconds.items():
        ratios = [b / t for t, b in zip(times, seconds["bare"], strict=True)]
        results[name] = dict(
            samples_per_s=stage.global_batch_size / statistics.median(times),
            of_bare=statistics.median(ratios),
            range=[min(ratios), max(ratios)],
        )
        print(
            f"{name:10}{results[name]['samples_per_s']:>10.2f}{results[name]['of_bare']:>19.2f} "
            f"[{min(ratios):.2f}, {max(ratios):.2f}]"
        )
    print("goal: platform >= 0.95 of bare")
    print(
        "\nCPU after the warm-up: the arithmetic's process (cores, CPU seconds per step) | the rest of the machine "
        "(cores, largest first)"
    )
    for name, used in cpu.items():
        if covered[name]:
            own = used.get(arithmetic(name), 0) / covered[name]
            rest = sorted(((v / covered[name], k) for k, v in used.items() if k != arithmetic(name)), reverse=True)
            results[name]["cores"] = {k: v / covered[name] for k, v in used.items()}
            listed = ", ".join(f"{k} {v:.3f}" for v, k in rest[:4])
            print(
                f"{name:10}{own:>6.2f} {own * statistics.median(seconds[name]):>6.2f} s | "
                f"{sum(v for v, _ in rest):.2f}: {listed}, {len(rest) - 4} more"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = dict(args={k: str(v) for k, v in vars(args).items()}, workload=what, results=results, loss_gaps=gaps)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"results: {args.out}")
    if max(gaps.values()) > LOSS_TOLERANCE:
        raise SystemExit("the variants' losses differ: they did not train on the same batches")


if __name__ == "__main__":
    main()
