"""Typed run configs: pydantic models loaded from YAML, with `--set a.b=c` overrides.

Unknown keys are errors (a typo must not silently fall back to a default) and every validation
error names the field's dotted path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator

# The presets ship inside the package (package data), so an installed platform finds them wherever
# it runs: a checkout, a wheel, or a Ray job's uploaded working directory.
PRESET_DIR = Path(__file__).resolve().parent / "configs"


class Spec(BaseModel):
    """The base of every typed spec: unknown keys are errors, and a loaded spec does not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PretrainedPart(Spec):
    """A Hugging Face part: `pretrained` (a directory or hub name) loads weights; `architecture`
    (the part's config.json fields) builds it without a download, with random weights, or on the
    meta device to size it."""

    pretrained: str | None = None
    architecture: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.pretrained is None and self.architecture is None:
            raise ValueError("set `pretrained` (directory or hub name) or `architecture`")
        return self


class VisionTowerSpec(PretrainedPart):
    feature_layer: int = -2  # LLaVA: the penultimate layer; CLS is always dropped


class LLMSpec(PretrainedPart):
    pass


class TokenizerSpec(Spec):
    pretrained: str | None = None  # None: an untrained byte-level tokenizer (random-init LLMs)


def _connector_options(value: Any) -> Spec:
    from mqt_llava.model.connectors import connector_options  # the registry imports this module

    return connector_options(value)


# A connector's options: validated by its kind's own options class (mqt_llava.model.connectors),
# dumped with all of that class's fields.
ConnectorOptions = Annotated[SerializeAsAny[Spec], BeforeValidator(_connector_options)]


class ImageSpec(Spec):
    aspect: Literal["pad", "square"] = "pad"


class ModelSpec(Spec):
    name: str
    vision_tower: VisionTowerSpec
    llm: LLMSpec
    tokenizer: TokenizerSpec = TokenizerSpec()
    connector: ConnectorOptions = Field(default_factory=lambda: _connector_options({"kind": "mqt"}))
    image: ImageSpec = ImageSpec()
    max_length: int = Field(2048, ge=8, description="LLM context, visual tokens included")


class CorpusSize(Spec):
    seed: int = 0
    num_pretrain: int = Field(20_000, ge=1)
    num_instruct: int = Field(20_000, ge=1)
    num_eval: int = Field(2_000, ge=0)


class ClipTraining(Spec):
    text_architecture: dict[str, Any]  # CLIPTextConfig fields; the vision side is the preset's tower
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    max_images: int = Field(20_000, ge=2)
    probe_scenes: int = Field(1000, ge=0, description="held-out scenes the per-cell probe gate is scored on")


class LMTraining(Spec):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    max_tokens: int = Field(256, ge=8)
    lr: float = Field(1e-3, gt=0)
    reading: int = Field(20_000, ge=0, description="scene-reading conversations (description, then questions)")
    drills: int = Field(0, ge=0, description="reading drills: a description, then bare questions and answers")
    drill_questions: int = Field(10, ge=1, description="questions per reading drill")
    drill_weights: dict[str, float] | None = Field(None, description="question kinds' weights in the drills "
                                                   "(None: the world's DRILL_WEIGHTS)")  # fmt: skip
    gate_scenes: int = Field(300, ge=0, description="held-out scenes the scene-reading gate asks about")
    gate_every: int = Field(0, ge=0, description="also score the gate every this many steps (0: only at the end)")
    gate_every_scenes: int = Field(60, ge=1, description="held-out scenes those intermediate scores ask about")


class BaseModelsSpec(Spec):
    """How jobs/base_models.py makes a preset's pretrained parts from the synthetic corpus: the model
    preset whose architectures it trains (`model.<field>=...` overrides reach it) and where it saves
    them (the preset's `pretrained` paths must point there; the job prints the overrides that do)."""

    model: str = Field("tiny", description="the model: a preset name or a YAML path")
    out: str = "./runs/quickstart/base_models"
    corpus: str
    corpus_size: CorpusSize = CorpusSize()
    vocab_size: int = Field(1024, ge=300)
    clip: ClipTraining
    lm: LMTraining = LMTraining()
    seed: int = 0


class ScheduleSpec(Spec):
    """Which budgets m training draws (mqt_llava.model.schedules)."""

    kind: Literal["linear", "log", "fixed"] = "linear"
    step: int = Field(2, ge=1, description="s of the linear schedule {s, 2s, ..., M}")
    seed: int = 0
    tokens: int | None = Field(None, ge=1, description="fixed: train at this m only (default M)")


class TrackingSpec(Spec):
    """Where rank 0 logs the run (MLflow). `uri` None: MLFLOW_TRACKING_URI, else a SQLite store
    (`mlflow.db`, artifacts in `mlartifacts/`) in the runs' storage directory."""

    uri: str | None = None
    experiment: str = "mqt-llava"
    log_export: bool = Field(True, description="log the final export as artifacts (large for 7B)")
    run_id: str | None = Field(None, description="log into this existing MLflow run (an ablation trial's)")
    parent_run_id: str | None = Field(None, description="a run created here is nested under this one")


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


T = TypeVar("T", bound=BaseModel)


class ConfigError(ValueError):
    pass


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b=c' -> (['a', 'b'], yaml-parsed c)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    return key.strip().split("."), yaml.safe_load(raw)


def split_overrides(overrides: list[str], section: str) -> tuple[list[str], list[str]]:
    """(overrides under `section.`, with that prefix removed; the rest). A spec field that names
    another spec (a stage's `model: tiny`) is set by `section=value`; `section.a.b=value` reaches a
    field of the spec it names."""
    inside, rest = [], []
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key.startswith(f"{section}."):
            inside.append(item.strip().removeprefix(f"{section}."))
        else:
            rest.append(item)
    return inside, rest


def override_value(value: Any) -> str:
    """A value as `--set` parses it back (YAML, flow style): 4, true, null, [1, 2], M."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def as_overrides(values: dict[str, Any], prefix: str = "") -> list[str]:
    """A nested mapping as `a.b=c` overrides (values in YAML's flow style), e.g. a spec section that
    overrides another config."""
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out += as_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={override_value(value)}")
    return out


def prefixed(section: str, overrides: list[str]) -> list[str]:
    """The inverse of split_overrides: `a.b=c` -> `section.a.b=c`."""
    return [f"{section}.{item.strip()}" for item in overrides]


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """A spec from a YAML file or a packaged config (`tiny/stage1`), with `a.b=c` overrides."""
    path = config_path(path)
    data = yaml.safe_load(path.read_text()) or {}
    data = apply_overrides(data, overrides or [])
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def presets() -> list[str]:
    return sorted(p.name for p in PRESET_DIR.iterdir() if p.is_dir())


def preset_path(preset: str, name: str = "model") -> Path:
    """A packaged config: `preset_path("tiny", "stage1")` is the tiny preset's stage1.yaml."""
    path = PRESET_DIR / preset / f"{name}.yaml"
    if not path.is_file():
        known = {p: sorted(f.stem for f in (PRESET_DIR / p).glob("*.yaml")) for p in presets()}
        raise ConfigError(f"no config {preset}/{name}; packaged presets and their configs: {known}")
    return path


def config_path(ref: str | Path) -> Path:
    """A config a job was given: a YAML file, or a packaged one named `<preset>/<name>` (`tiny/stage1`)."""
    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    preset, sep, name = str(ref).partition("/")
    if not sep or "/" in name:
        raise ConfigError(f"config {ref!r}: give a YAML file or a packaged config <preset>/<name>, e.g. tiny/stage1")
    return preset_path(preset, name)


def model_config_path(model: str) -> Path:
    """A stage's `model`: a preset name (its packaged model.yaml), or a path to a model YAML."""
    if model.endswith((".yaml", ".yml")) or "/" in model:
        return config_path(model)
    return preset_path(model, "model")
