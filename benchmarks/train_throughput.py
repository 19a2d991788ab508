"""Training throughput: Ray Train + DeepSpeed against a plain PyTorch loop, measured side by side in
one run with the same model, data, batch size and budgets.

    python benchmarks/train_throughput.py                  # tiny architecture (random init), stage 2
    python benchmarks/train_throughput.py --steps 60 --batch 16

1. plain:  one process, the loop a researcher would write: the same Ray Data pipeline iterated in
           the driver -> model -> loss.backward() -> clip -> torch AdamW step (2 torch threads)
2. ray_1:  the platform's path (jobs/stage2.py): Ray Train V2, 1 worker, DeepSpeed ZeRO-2 (2 threads)
3. ray_2:  2 workers, ZeRO-2, 1 thread each (this machine has 2 cores), the same global batch

Samples/s is the median over optimizer steps after the first `--warmup` (start-up, JIT and the data
pipeline's ramp-up excluded), from the per-step figures the loop logs to MLflow; the plain loop is
timed the same way. Peak memory is the worker's RSS (max over workers), and the plain process's.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from ray.data import DataContext
from synthetic_shards import RANDOM_INIT, synthetic_shards

from mqt_llava.config import ModelSpec, load_config, prefixed, preset_path
from mqt_llava.data.datasets import read_shards, training_dataset
from mqt_llava.data.samples import LlavaCollate
from mqt_llava.model.builder import build_model, image_settings_for
from mqt_llava.model.stages import configure_trainable
from mqt_llava.ray_runtime import init_ray
from mqt_llava.tracking import RUN_NAME_TAG
from mqt_llava.train.launch import run_stage
from mqt_llava.train.plan import StageRun, resolve_run


def stage_run(shards: str, root: Path, name: str, steps: int, batch: int, workers: int) -> StageRun:
    overrides = [
        f"data={shards}", "init_from=null", "zero_stage=2", f"max_steps={steps}", f"checkpoint_every={10 * steps}",
        f"global_batch_size={batch}", f"micro_batch_size={batch // workers}", f"num_workers={workers}",
        f"resources.worker_cpus={0.5 if workers == 1 else 0.25}", f"resources.torch_threads={2 // workers}",
        "tracking.log_export=false", f"log_every={steps}",
    ]  # fmt: skip
    return resolve_run(preset_path("tiny", "stage2"), overrides + prefixed("model", RANDOM_INIT), name=name,
                       storage=str(root / "runs"))  # fmt: skip


def plain_loop(run: StageRun, warmup: int) -> dict:
    """The same pipeline, model, optimizer and budgets, without Ray Train or DeepSpeed."""
    torch.set_num_threads(2)
    stage = run.stage
    torch.manual_seed(stage.seed)
    built = build_model(run.model)
    configure_trainable(built.model, stage.stage)
    params = [p for p in built.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    dataset = training_dataset(
        read_shards(stage.data, seed=stage.seed), run.model, stage.template, image_settings_for(run.model),
        decode_actors=1, decode_cpus=0.5,
    )  # fmt: skip
    batches = dataset.iter_torch_batches(
        batch_size=stage.global_batch_size, collate_fn=LlavaCollate(built.tokenizer.pad_token_id), drop_last=True,
        local_shuffle_buffer_size=stage.shuffle_buffer, local_shuffle_seed=stage.seed,
    )  # fmt: skip
    built.model.train()
    rates, step, last = [], 0, time.perf_counter()
    for batch in batches:
        loss = built.model(**batch, num_visual_tokens=run.budget(step)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        now = time.perf_counter()
        rates.append(len(batch["input_ids"]) / (now - last))
        last = now
        if step == run.plan.total_steps:
            break
    return dict(
        samples_per_s=statistics.median(rates[warmup:]),
        steps=step,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def ray_train(run: StageRun, warmup: int) -> dict:
    result = run_stage(run)
    client = mlflow.MlflowClient(f"sqlite:///{run.storage}/mlflow.db")
    experiment = client.get_experiment_by_name(run.stage.tracking.experiment)
    (mlflow_run,) = client.search_runs([experiment.experiment_id], f"tags.`{RUN_NAME_TAG}` = '{run.name}'")
    rates = sorted(client.get_metric_history(mlflow_run.info.run_id, "samples_per_s"), key=lambda m: m.step)
    return dict(
        samples_per_s=statistics.median([m.value for m in rates[warmup:]]),
        steps=int(result.metrics["step"]),
        peak_memory_mb=result.metrics["peak_memory_mb"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/train_throughput.json"))
    args = parser.parse_args()

    init_ray(num_cpus=2)
    DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        root = Path(tmp)
        shards = synthetic_shards(load_config(ModelSpec, preset_path("tiny"), RANDOM_INIT), root, args.records)
        results = {}
        for name, workers in (("plain", 1), ("ray_1", 1), ("ray_2", 2)):
            run = stage_run(shards, root, name, args.steps, args.batch, workers)
            print(
                f"\n--- {name}: {workers} worker(s), global batch {args.batch}, {run.plan.total_steps} steps",
                flush=True,
            )
            results[name] = plain_loop(run, args.warmup) if name == "plain" else ray_train(run, args.warmup)
            print(f"{name}: {results[name]}", flush=True)

    base = results["plain"]["samples_per_s"]
    print(f"\n{'':8}{'samples/s':>12}{'vs plain':>10}{'peak MB':>10}")
    for name, r in results.items():
        print(f"{name:8}{r['samples_per_s']:>12.1f}{r['samples_per_s'] / base:>9.2f}x{r['peak_memory_mb']:>10.0f}")
    ratio = results["ray_1"]["samples_per_s"] / base
    print(f"\nRay Train + DeepSpeed (1 worker, ZeRO-2) / plain PyTorch: {ratio:.2f}x (goal >= 0.9x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(args).items()}, results=results), indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
