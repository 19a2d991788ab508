"""Driver side of a stage on Ray: the run is resolved and checked first (mqt_llava.train.plan), then
a Ray Train V2 TorchTrainer runs `train_loop` on every worker in Ray Train's worker context. (Under
torchrun, without Ray, mqt_llava.train.torchrun runs the same loop.)

A run is `(storage, name)`: submitting the same name again resumes from its latest checkpoint
(Ray Train V2 restores a run whose storage path and name match), and its MLflow run continues.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import ray
from ray.data import DataContext, ExecutionOptions
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mqt_llava.config import ConfigError
from mqt_llava.data.datasets import read_shards, training_dataset
from mqt_llava.model.builder import image_settings_for
from mqt_llava.output import train_log_level
from mqt_llava.ray_runtime import init_ray
from mqt_llava.tracking import RunTracker, tracking_uri
from mqt_llava.train.memory import check_fits
from mqt_llava.train.plan import StageRun
from mqt_llava.train.worker import ray_train_worker


def ingest_options() -> ExecutionOptions:
    """Ray Train's default ingest options, less the deprecated `exclude_resources` its default copies
    (a RayDeprecationWarning from every worker group otherwise), and in order: blocks reach the
    workers in the seeded file order whichever decode task finishes first, so a run's samples (and
    losses) do not depend on how busy the machine is."""
    current = DataContext.get_current().execution_options
    return ExecutionOptions(
        resource_limits=current.resource_limits, preserve_order=True, verbose_progress=current.verbose_progress
    )


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


def stage_dataset(run: StageRun):
    """The stage's training dataset, as the platform hands it to its workers: its shards read in the
    seeded order, decoded, tokenized and templated."""
    stage, resources = run.stage, run.stage.resources
    return training_dataset(
        read_shards(stage.data, seed=stage.seed),
        run.model,
        stage.template,
        image_settings_for(run.model),
        decode_actors=resources.decode_actors,
        decode_cpus=resources.decode_cpus,
        tokenize_cpus=resources.tokenize_cpus,
        max_length=stage.max_length,
    )


def trainer_for(run: StageRun, callbacks: list | None = None) -> TorchTrainer:
    stage, resources = run.stage, run.stage.resources
    dataset = stage_dataset(run)
    per_worker = {"CPU": resources.worker_cpus} | ({"GPU": 1} if run.use_gpu else {})
    # Train V2 patches print() into its logger and tees it to a wrapped stdout: every line twice.
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"} | ({} if run.use_gpu else {"DS_ACCELERATOR": "cpu"})
    return TorchTrainer(
        ray_train_worker,
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
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest_options()),  # equal splits
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
    if run.use_gpu and run.stage.resources.gpu_memory_gib:
        gib = run.stage.resources.gpu_memory_gib
        plan = check_fits(run.stage, run.model, gib, f"resources.gpu_memory_gib = {gib:g}")
        print(f"[{run.name}] memory plan: {plan.verdict()} (python jobs/memory_plan.py for the table)", flush=True)
    plan = run.plan
    print(
        f"[{run.name}] {run.stage.stage}: {plan.rows} rows, {plan.total_steps} optimizer steps "
        f"({plan.steps_per_epoch}/epoch) of {run.stage.global_batch_size} samples on {run.stage.num_workers} "
        f"worker(s) x micro-batch {run.stage.micro_batch_size} x accumulation "
        f"{run.stage.gradient_accumulation_steps}; ZeRO-{run.stage.zero_stage} on {'GPU' if run.use_gpu else 'CPU'}; "
        f"run dir {run.run_dir}",
        flush=True,
    )
    try:
        result = trainer_for(run, callbacks).fit()
    except BaseException:
        mark_failed(run)
        raise
    return StageResult(
        run=run,
        metrics=dict(result.metrics or {}),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        export_dir=run.export_dir,
    )


def mark_failed(run: StageRun) -> None:
    """The run's MLflow run ends FAILED when Ray Train gives up on it (workers killed outright, or
    failures past max_failures), which no worker lived to record."""
    try:
        RunTracker(run.stage.tracking, run.storage, run.name).finish("FAILED")
    except Exception as exc:  # the training error is the one to report
        print(f"[{run.name}] could not mark the MLflow run FAILED: {exc}", flush=True)


def report_result(result: StageResult) -> None:
    """The job's last lines: how it ended and where to look."""
    run = result.run
    print(f"[{run.name}] done: step {result.metrics.get('step')}, loss {result.metrics.get('loss', float('nan')):.4f}")
    print(f"[{run.name}] checkpoint: {result.checkpoint}")
    print(f"[{run.name}] export: {result.export_dir}")
    tracking = run.stage.tracking
    print(
        f"[{run.name}] MLflow: mlflow ui --backend-store-uri {tracking_uri(tracking, run.storage)} "
        f"(experiment {tracking.experiment})"
    )
