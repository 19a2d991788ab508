"""Driver side of a stage: resolve and check everything before any worker starts, then fit a Ray
Train V2 TorchTrainer running `train_loop` on every worker.

A run is `(storage, name)`: submitting the same name again resumes from its latest checkpoint
(Ray Train V2 restores a run whose storage path and name match), and its MLflow run continues.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import ray
from ray.data import DataContext
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mqt_llava.config import (
    ConfigError,
    ModelSpec,
    StageSpec,
    load_config,
    model_config_path,
)
from mqt_llava.data.datasets import read_shards, shard_files, training_dataset
from mqt_llava.model.builder import image_settings_for, is_local_path, pretrained_location
from mqt_llava.model.export import load_part_state
from mqt_llava.output import train_log_level
from mqt_llava.ray_runtime import init_ray
from mqt_llava.tracking import tracking_uri
from mqt_llava.train.loop import train_loop
from mqt_llava.train.plan import StageRun, plan_steps, token_schedule


def count_rows(location: str) -> int:
    """Rows in a directory of Parquet shards, from the files' footers (no data read)."""
    filesystem, files = shard_files(location)
    total = 0
    for name in files:
        with filesystem.open_input_file(name) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def check_model_sources(model: ModelSpec) -> None:
    for field, part in (("vision_tower", model.vision_tower), ("llm", model.llm), ("tokenizer", model.tokenizer)):
        if part.pretrained:
            try:
                pretrained_location(part.pretrained)
            except FileNotFoundError as exc:
                raise ConfigError(f"model {field}.pretrained: {exc}") from None


def check_init_from(stage: StageSpec, model: ModelSpec) -> None:
    if not stage.init_from or "://" in stage.init_from:
        return  # remote exports are checked where they are downloaded, on the worker
    try:
        state = load_part_state(stage.init_from, "mqt")
    except (FileNotFoundError, KeyError) as exc:
        raise ConfigError(f"init_from: {exc}") from None
    width = model.mqt.num_queries
    queries = state.get("queries")
    if queries is not None and queries.shape[0] != width:
        raise ConfigError(
            f"init_from: {stage.init_from} has an MQT with M = {queries.shape[0]} queries, the model has {width}"
        )


def absolute(location: str | None) -> str | None:
    """Workers run in Ray's own working directory: a relative local path must not reach them."""
    if location is None or "://" in location or not is_local_path(location) and not Path(location).exists():
        return location  # a URI, or a hub name
    return str(Path(location).expanduser().resolve())


def with_absolute_paths(stage: StageSpec, model: ModelSpec) -> tuple[StageSpec, ModelSpec]:
    parts = {
        name: getattr(model, name).model_copy(update={"pretrained": absolute(getattr(model, name).pretrained)})
        for name in ("vision_tower", "llm", "tokenizer")
    }
    stage = stage.model_copy(update={"data": absolute(stage.data), "init_from": absolute(stage.init_from)})
    return stage, model.model_copy(update=parts)


def resolve_run(
    stage_config: str | Path,
    overrides: list[str],
    model_overrides: list[str],
    name: str | None,
    storage: str,
    expect_stage: str | None = None,
) -> StageRun:
    """Everything a bad config can get wrong fails here, in the driver, naming the field."""
    stage = load_config(StageSpec, stage_config, overrides)
    if expect_stage and stage.stage != expect_stage:
        raise ConfigError(f"{stage_config}: stage is {stage.stage!r}, but this job runs {expect_stage}")
    model = load_config(ModelSpec, model_config_path(stage.model), model_overrides)
    stage, model = with_absolute_paths(stage, model)
    check_model_sources(model)
    check_init_from(stage, model)
    try:
        token_schedule(stage, model)
    except ValueError as exc:
        raise ConfigError(f"schedule: {exc}") from None
    try:
        rows = count_rows(stage.data)
    except FileNotFoundError:
        raise ConfigError(f"data: no shards at {stage.data} (write them with pipelines/prepare_llava.py)") from None
    try:
        plan = plan_steps(stage, rows)
    except ValueError as exc:
        raise ConfigError(f"global_batch_size: {exc}") from None
    storage = storage if "://" in storage else str(Path(storage).resolve())
    if "://" in storage and not (stage.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise ConfigError("tracking.uri: remote storage needs a tracking server (set it or MLFLOW_TRACKING_URI)")
    name = name or f"{model.name}-{stage.stage}"
    return StageRun(stage=stage, model=model, name=name, storage=storage, plan=plan, use_gpu=False)


def check_cpus(run: StageRun) -> None:
    """Refuse a run whose workers and data pipeline cannot all be scheduled at once: it would stall
    silently, not fail. Ray Data's file-listing task asks for a whole CPU (not configurable in
    Ray 2.60) beside the decode actors, while the Train workers hold theirs."""
    resources, workers = run.stage.resources, run.stage.num_workers
    needed = workers * resources.worker_cpus + resources.decode_actors * resources.decode_cpus + 1.0
    available = ray.cluster_resources().get("CPU", 0)
    if needed > available + 1e-9:
        raise ConfigError(
            f"resources.worker_cpus: {workers} worker(s) x {resources.worker_cpus:g} CPU + "
            f"{resources.decode_actors} decode actor(s) x {resources.decode_cpus:g} + 1 for Ray Data's file listing "
            f"= {needed:g} CPUs, but the cluster has {available:g}; lower worker_cpus (logical CPUs: set "
            "resources.torch_threads for the threads each worker uses)"
        )


def with_devices(run: StageRun) -> StageRun:
    """Decide GPU or CPU once Ray is up: the config's choice, else whether the cluster has GPUs."""
    use_gpu = run.stage.resources.use_gpu
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    return dataclasses.replace(run, use_gpu=use_gpu)


def trainer_for(run: StageRun, callbacks: list | None = None) -> TorchTrainer:
    stage, resources = run.stage, run.stage.resources
    dataset = training_dataset(
        read_shards(stage.data, seed=stage.seed),
        run.model,
        stage.template,
        image_settings_for(run.model),
        decode_actors=resources.decode_actors,
        decode_cpus=resources.decode_cpus,
        tokenize_cpus=resources.tokenize_cpus,
    )
    per_worker = {"CPU": resources.worker_cpus} | ({"GPU": 1} if run.use_gpu else {})
    # Train V2 patches print() into its logger and tees it to a wrapped stdout: every line twice.
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"} | ({} if run.use_gpu else {"DS_ACCELERATOR": "cpu"})
    return TorchTrainer(
        train_loop,
        train_loop_config={"run": run},
        scaling_config=ScalingConfig(
            num_workers=stage.num_workers, use_gpu=run.use_gpu, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=run.name,
            storage_path=run.storage,
            failure_config=FailureConfig(max_failures=stage.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=stage.keep_checkpoints),
            worker_runtime_env={"env_vars": env},
            logging_config=LoggingConfig(log_level=train_log_level()),
            callbacks=callbacks or None,  # e.g. Tune's TuneReportCallback when a Tune trial runs the stage
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(datasets_to_split=["train"]),  # equal streaming splits
    )


@dataclass
class StageResult:
    run: StageRun
    metrics: dict
    checkpoint: str | None
    export_dir: str


def run_stage(run: StageRun, callbacks: list | None = None) -> StageResult:
    init_ray()
    DataContext.get_current().enable_progress_bars = False  # the dataset copies this context
    run = with_devices(run)
    check_cpus(run)
    plan = run.plan
    print(
        f"[{run.name}] {run.stage.stage}: {plan.rows} rows, {plan.total_steps} optimizer steps "
        f"({plan.steps_per_epoch}/epoch) of {run.stage.global_batch_size} samples on {run.stage.num_workers} "
        f"worker(s) x micro-batch {run.stage.micro_batch_size} x accumulation "
        f"{run.stage.gradient_accumulation_steps}; ZeRO-{run.stage.zero_stage} on {'GPU' if run.use_gpu else 'CPU'}; "
        f"run dir {run.run_dir}",
        flush=True,
    )
    result = trainer_for(run, callbacks).fit()
    return StageResult(
        run=run,
        metrics=dict(result.metrics or {}),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        export_dir=run.export_dir,
    )


def main(stage_name: str, argv: list[str] | None = None) -> StageResult:
    """The command line of jobs/stage1.py and jobs/stage2.py."""
    parser = argparse.ArgumentParser(
        prog=f"jobs/{stage_name}.py", description=f"Train {stage_name} on Ray Train + DeepSpeed."
    )
    parser.add_argument(
        "--config",
        default=f"tiny/{stage_name}",
        help="a StageSpec: a YAML file or a packaged config such as llava-7b/stage1",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a stage field, e.g. --set lr=1e-4 --set resources.worker_cpus=0.9")  # fmt: skip
    parser.add_argument("--model-set", dest="model_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of the stage's model preset")  # fmt: skip
    parser.add_argument("--name", help="run name; the same name again resumes (default <model>-<stage>)")
    parser.add_argument("--storage", default="runs/train", help="where runs live: a directory or a URI")
    args = parser.parse_args(argv)
    try:
        run = resolve_run(args.config, args.overrides, args.model_overrides, args.name, args.storage, stage_name)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    result = run_stage(run)
    print(f"[{run.name}] done: step {result.metrics.get('step')}, loss {result.metrics.get('loss', float('nan')):.4f}")
    print(f"[{run.name}] checkpoint: {result.checkpoint}")
    print(f"[{run.name}] export: {result.export_dir}")
    tracking = run.stage.tracking
    print(f"[{run.name}] MLflow: {tracking_uri(tracking, run.storage)} (experiment {tracking.experiment})")
    return result
