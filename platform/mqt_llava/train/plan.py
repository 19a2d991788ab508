"""A stage run, fully resolved in the driver before any worker starts: the configs, where it
lives, how many optimizer steps it takes and the budget m of each.

Every rank must take the same number of optimizer steps (a rank that stops early leaves the others
waiting in a collective). Ray Train splits the dataset into equal streaming shards (`equal=True`:
floor(rows / workers) rows each), so the plan is computed from the row count once, here:

    micro-batches per epoch per rank = floor(rows / workers) // micro_batch_size
    steps per epoch                  = micro-batches per epoch // gradient accumulation
    total steps                      = ceil(epochs x steps per epoch), capped by max_steps

A rank that reaches the end of its shard starts the next epoch, so a fractional epoch count or a
few rows rejected at tokenization never leaves a rank short.

The budgets are resolved here too, once: M (the model's largest budget) and the schedule m is drawn
from at each step (stage 2 and an elastic stage 1; otherwise every step trains at M).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mqt_llava.config import ConfigError, load_config, model_config_path, split_overrides
from mqt_llava.data.shards import count_rows
from mqt_llava.model.connectors import connector_options
from mqt_llava.model.export import NotAnExport, load_part_state, read_config
from mqt_llava.model.schedules import TokenSchedule
from mqt_llava.model.spec import ModelSpec, connector_token_range, max_visual_tokens
from mqt_llava.model.stages import CONNECTOR
from mqt_llava.model.storage import is_local_path, pretrained_location
from mqt_llava.train.spec import StageSpec


@dataclass(frozen=True)
class StagePlan:
    rows: int
    micro_batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    max_tokens: int  # M: the model's largest budget
    schedule: TokenSchedule | None  # what m is drawn from at each step; None: every step trains at M

    def budget(self, step: int) -> int:
        """m for optimizer step `step`: the schedule's draw (pure in its seed and the step, so every rank
        agrees without communicating, and a resumed run draws what it would have drawn), else M."""
        return self.max_tokens if self.schedule is None else self.schedule.draw(step)

    def record(self) -> dict:
        """The plan as the run's resolved config records it: the step counts, M and the budgets drawn from."""
        budgets = list(self.schedule.support) if self.schedule else [self.max_tokens]
        counts = {k: v for k, v in asdict(self).items() if k != "schedule"}
        return counts | {"budgets": budgets}


def plan_steps(stage: StageSpec, model: ModelSpec, rows: int) -> StagePlan:
    """The plan of `stage` training `model` (as the stage trains it) on `rows` rows. Raises ValueError
    for data smaller than one optimizer step and for a schedule that cannot be drawn from."""
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
    # Hugging Face's Trainer (the official runs): ceil(warmup_ratio x total steps).
    warmup = max(1, math.ceil(stage.warmup_ratio * total))
    draws = stage.stage == "stage2" or stage.stage1_elastic
    schedule = token_schedule(stage, model) if draws else None
    return StagePlan(rows, micro, steps_per_epoch, total, warmup, max_visual_tokens(model), schedule)


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


def token_schedule(stage: StageSpec, model: ModelSpec) -> TokenSchedule:
    """The stage's schedule over 1..M (raises ValueError for one that cannot be drawn from)."""
    s = stage.schedule
    low, high = connector_token_range(model)
    return TokenSchedule(s.kind, high, step=s.step, seed=s.seed, tokens=s.tokens, min_tokens=low)


def resolved_config(run: StageRun) -> dict:
    """The whole resolved config, as logged to MLflow and written beside the export."""
    return dict(
        name=run.name,
        storage=run.storage,
        use_gpu=run.use_gpu,
        plan=run.plan.record(),
        stage=run.stage.model_dump(),
        model=run.model.model_dump(),
    )


def stage_model_spec(stage: StageSpec, model: ModelSpec) -> ModelSpec:
    """The model as this stage trains it: its image preprocessing is the stage's `image_aspect` when
    set (LLaVA-1.5 pretrained with square images and fine-tuned with padded ones), so the data
    pipeline, the export's config and its training record all say what the stage did."""
    if stage.image_aspect is None:
        return model
    return model.model_copy(update={"image": model.image.model_copy(update={"aspect": stage.image_aspect})})


def check_model_sources(model: ModelSpec) -> None:
    for field, part in (("vision_tower", model.vision_tower), ("llm", model.llm), ("tokenizer", model.tokenizer)):
        if part.pretrained:
            try:
                pretrained_location(part.pretrained)
            except FileNotFoundError as exc:
                raise ConfigError(f"model {field}.pretrained: {exc}") from None


def check_init_from(stage: StageSpec, model: ModelSpec) -> None:
    """The export stage 2 starts from holds a connector like the model's, local or at a URI: checked
    in the driver (reading its config and the connector's bytes only), before any worker starts."""
    if not stage.init_from:
        return
    try:
        load_part_state(stage.init_from, CONNECTOR)
        theirs = read_config(stage.init_from)["connector"]
        # Its options as this version reads them: an export written before an option existed has the
        # option's default (the position table, once not saved, was the fixed sin-cos one).
        theirs = connector_options(theirs).model_dump()
    except (OSError, KeyError, ValueError, NotAnExport) as exc:  # OSError: a missing file, or storage unreachable
        raise ConfigError(f"init_from: {exc}") from None
    ours = model.connector.model_dump()
    if theirs != ours:
        differ = {
            k: (theirs.get(k), ours.get(k)) for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)
        }
        raise ConfigError(f"init_from: {stage.init_from}'s connector differs from the model's (theirs, ours): {differ}")


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
    name: str | None,
    storage: str,
    expect_stage: str | None = None,
) -> StageRun:
    """Everything a bad config can get wrong fails here, in the driver, naming the field.
    `overrides` set fields of the stage spec; `model.<path>=value` sets a field of its model preset."""
    model_overrides, overrides = split_overrides(overrides, "model")
    stage = load_config(StageSpec, stage_config, overrides)
    if expect_stage and stage.stage != expect_stage:
        raise ConfigError(f"{stage_config}: stage is {stage.stage!r}, but this job runs {expect_stage}")
    model = load_config(ModelSpec, model_config_path(stage.model), model_overrides)
    model = stage_model_spec(stage, model)
    stage, model = with_absolute_paths(stage, model)
    check_model_sources(model)
    if stage.max_length and stage.max_length > model.max_length:
        raise ConfigError(f"max_length: {stage.max_length} is above the model's max_length {model.max_length}")
    check_init_from(stage, model)
    try:
        token_schedule(stage, model)  # checked even where the stage trains at M only
    except ValueError as exc:
        raise ConfigError(f"schedule: {exc}") from None
    try:
        rows = count_rows(stage.data)
    except FileNotFoundError:
        raise ConfigError(f"data: no shards at {stage.data} (write them with pipelines/prepare_llava.py)") from None
    try:
        plan = plan_steps(stage, model, rows)
    except ValueError as exc:
        raise ConfigError(f"global_batch_size: {exc}") from None
    storage = storage if "://" in storage else str(Path(storage).resolve())
    if "://" in storage and not (stage.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise ConfigError("tracking.uri: remote storage needs a tracking server (set it or MLFLOW_TRACKING_URI)")
    name = name or f"{model.name}-{stage.stage}"
    return StageRun(stage=stage, model=model, name=name, storage=storage, plan=plan, use_gpu=False)
