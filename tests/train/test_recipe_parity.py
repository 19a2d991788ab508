"""The llava-7b presets against the official MQT-LLaVA recipe, value by value.

OFFICIAL is data: what the official repository (gordonhu608/MQT-LLaVA) runs, each value with the file
it comes from (an "auto" entry as Hugging Face's Trainer 4.36 and DeepSpeed 0.12, the versions its
pyproject pins, resolve it). Each row reads our value from the presets as the platform resolves them.
A row is either the same, or a named difference whose reason and our pinned value stand in the row;
changing a preset, a default, or the derived DeepSpeed config fails here until the table (and the
table in docs/training.md) says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from mqt_llava.config import load_config, model_config_path, preset_path
from mqt_llava.model.spec import ModelSpec
from mqt_llava.model.stages import TRAINABLE_PARTS
from mqt_llava.train import loop
from mqt_llava.train.deepspeed_config import deepspeed_config, llm_hidden_size
from mqt_llava.train.plan import plan_steps, stage_model_spec, token_schedule
from mqt_llava.train.spec import StageSpec
from mqt_llava.train.strategies import deepspeed as strategy

PRETRAIN = "scripts/v1_5/pretrain.sh"
FINETUNE = "scripts/v1_5/finetune.sh"
ZERO2, ZERO3 = "scripts/zero2.json", "scripts/zero3.json"
TRAIN_PY = "llava/train/train.py"
TRAIN_MEM = "llava/train/train_mem.py"
BUILDER = "llava/model/multimodal_projector/builder.py"
HIDDEN = 4096  # Vicuna-7B's hidden_size: what HF resolves the "auto" buckets from
NO_CLIPPING = 0.0  # no gradient_clipping key; DeepSpeed 0.12's default is 0 (none), HF fills only "auto"


@dataclass(frozen=True)
class Preset:
    stage: StageSpec
    model: ModelSpec  # as the stage trains it (mqt_llava.train.plan.stage_model_spec)

    @property
    def ds(self) -> dict:
        return deepspeed_config(self.stage, use_gpu=True, hidden_size=HIDDEN)

    @property
    def zero(self) -> dict:
        return self.ds["zero_optimization"]


@dataclass(frozen=True)
class Row:
    setting: str
    official: Any
    source: str  # the official file the value comes from
    ours: Callable[[Preset], Any]
    differs: str | None = None  # a named difference: why ours differs
    ours_value: Any = None  # ... and our value, pinned


def same(setting: str, official: Any, source: str, ours: Callable[[Preset], Any]) -> Row:
    return Row(setting, official, source, ours)


def named(setting: str, official: Any, source: str, ours: Callable[[Preset], Any], value: Any, why: str) -> Row:
    return Row(setting, official, source, ours, why, value)


def schedule_shape(stage: StageSpec, model: ModelSpec) -> str:
    """What the strategy's LR schedule is, read from its values at every step of a short plan: a
    linear warmup to the peak, then 0.5 (1 + cos(pi t)) of it over the rest."""
    plan = plan_steps(stage, model, stage.global_batch_size * 50)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = strategy.lr_schedule(optimizer, plan)
    seen = []
    for _ in range(plan.total_steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    warmup, total = plan.warmup_steps, plan.total_steps
    cosine = [
        step / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))
        for step in range(total)
    ]
    return "cosine" if seen == pytest.approx(cosine, abs=1e-9) else f"other: {seen[:3]}...{seen[-3:]}"


def steps_per_epoch(rows: int) -> Callable[[Preset], int]:
    return lambda p: plan_steps(p.stage, p.model, rows).steps_per_epoch


LAST_BATCH = (
    "every rank takes the same whole optimizer steps (a rank short of a step would hang its collective): "
    "the last rows short of a global batch wait for the next epoch instead of making a smaller step"
)
ROWS_558K, ROWS_665K = 558_128, 665_298  # LLaVA-Pretrain's blip_laion_cc_sbu_558k.json, llava_v1_5_mix665k.json

MEMORY = "the memory plan's worst case on cluster.yaml's 40-GiB A100s (docs/training.md)"
ATTENTION = (
    "SDPA computes the same exact attention; flash-attn is not a dependency (not on the GPU image either). "
    "--set attn_implementation=flash_attention_2 where it is installed"
)


def common(script: str, zero_file: str) -> list[Row]:
    """Rows both stages share (their value from that stage's script and ZeRO file)."""
    return [
        same("GPUs (data-parallel ranks)", 8, f"{script}: --nproc_per_node=8", lambda p: p.stage.num_workers),
        same("weight decay", 0.0, f"{script}: --weight_decay 0.", lambda p: p.stage.weight_decay),
        same("warmup ratio", 0.03, f"{script}: --warmup_ratio 0.03", lambda p: p.stage.warmup_ratio),
        same(
            "LR schedule after warmup",
            "cosine",
            f"{script}: --lr_scheduler_type cosine",
            lambda p: schedule_shape(p.stage, p.model),
        ),
        same("bf16", True, f"{script}: --bf16 True", lambda p: p.ds["bf16"]["enabled"]),
        same("tf32", True, f"{script}: --tf32 True", lambda p: p.stage.tf32),
        same(
            "gradient checkpointing",
            True,
            f"{script}: --gradient_checkpointing True",
            lambda p: p.stage.gradient_checkpointing,
        ),
        named(
            "attention kernel",
            "flash_attention_2",
            f"{TRAIN_MEM}: train(attn_implementation=...)",
            lambda p: p.stage.attn_implementation,
            "sdpa",
            ATTENTION,
        ),
        same(
            "gradient clipping", NO_CLIPPING, f"{zero_file}: no gradient_clipping", lambda p: p.ds["gradient_clipping"]
        ),
        same("ZeRO overlap_comm", True, zero_file, lambda p: p.zero["overlap_comm"]),
        same("ZeRO contiguous_gradients", True, zero_file, lambda p: p.zero["contiguous_gradients"]),
        same("ZeRO sub_group_size", 10**9, zero_file, lambda p: p.zero["sub_group_size"]),
        same(
            "ZeRO reduce_bucket_size",
            HIDDEN * HIDDEN,
            f"{zero_file}: auto -> hidden x hidden",
            lambda p: p.zero["reduce_bucket_size"],
        ),
        same("LLM", "lmsys/vicuna-7b-v1.5", f"{script}: --model_name_or_path", lambda p: p.model.llm.pretrained),
        same(
            "vision tower",
            "openai/clip-vit-large-patch14-336",
            f"{script}: --vision_tower",
            lambda p: p.model.vision_tower.pretrained,
        ),
        same(
            "vision feature layer",
            -2,
            f"{script}: --mm_vision_select_layer -2",
            lambda p: p.model.vision_tower.feature_layer,
        ),
        named(
            "seed",
            42,
            "TrainingArguments' default (transformers 4.36)",
            lambda p: p.stage.seed,
            0,
            "a seed, not a recipe value: any seed is the recipe",
        ),
    ]


STAGE1 = [
    *common(PRETRAIN, ZERO2),
    same("template", "plain", f"{PRETRAIN}: --version plain", lambda p: p.stage.template),
    same(
        "per-device batch x accumulation",
        (32, 1),
        f"{PRETRAIN}: --per_device_train_batch_size 32 --gradient_accumulation_steps 1",
        lambda p: (p.stage.micro_batch_size, p.stage.gradient_accumulation_steps),
    ),
    same("global batch", 256, f"{PRETRAIN}: 8 x 32 x 1", lambda p: p.ds["train_batch_size"]),
    same("learning rate", 1e-3, f"{PRETRAIN}: --learning_rate 1e-3", lambda p: p.stage.lr),
    same("epochs", 1, f"{PRETRAIN}: --num_train_epochs 1", lambda p: p.stage.epochs),
    named(
        "optimizer steps per epoch (558K)",
        math.ceil(ROWS_558K / 256),
        "Trainer: len(dataloader) // accumulation, the last batch partial",
        steps_per_epoch(ROWS_558K),
        ROWS_558K // 256,
        LAST_BATCH,
    ),
    named(
        "longest sequence (model_max_length)",
        2048,
        f"{PRETRAIN}: --model_max_length 2048",
        lambda p: p.stage.max_length or p.model.max_length,
        512,
        f"{MEMORY}: 33.0 GiB at 512, 77.0 at 2048; 558K captions are one sentence, far below the 256 "
        "text tokens 512 leaves",
    ),
    same("ZeRO stage", 2, f"{PRETRAIN}: --deepspeed {ZERO2}", lambda p: p.zero["stage"]),
    same(
        "group by modality length",
        False,
        f"{PRETRAIN}: not set (TrainingArguments default False)",
        lambda p: p.stage.group_by_modality,
    ),
    same(
        "image preprocessing",
        "square",
        f"{PRETRAIN}: no --image_aspect_ratio ({TRAIN_PY} default 'square')",
        lambda p: p.model.image.aspect,
    ),
    same(
        "visual tokens m",
        256,
        f"{PRETRAIN}: --num_visual_tokens first_stage ({BUILDER}: 256)",
        lambda p: None if p.stage.stage1_elastic else p.model.connector.num_queries,
    ),
    same(
        "trained parts",
        ("connector",),
        f"{PRETRAIN}: --tune_mm_query_abstractor True",
        lambda p: TRAINABLE_PARTS[p.stage.stage],
    ),
]

STAGE2 = [
    *common(FINETUNE, ZERO3),
    same("template", "vicuna_v1", f"{FINETUNE}: --version v1", lambda p: p.stage.template),
    named(
        "per-device batch x accumulation",
        (16, 1),
        f"{FINETUNE}: --per_device_train_batch_size 16 --gradient_accumulation_steps 1",
        lambda p: (p.stage.micro_batch_size, p.stage.gradient_accumulation_steps),
        (8, 2),
        f"{MEMORY}: 48.4 GiB at 16, 33.3 at 8; --set micro_batch_size=16 on 80-GiB GPUs",
    ),
    same("global batch", 128, f"{FINETUNE}: 8 x 16 x 1", lambda p: p.ds["train_batch_size"]),
    same("learning rate", 2e-5, f"{FINETUNE}: --learning_rate 2e-5", lambda p: p.stage.lr),
    same("epochs", 2, f"{FINETUNE}: --num_train_epochs 2", lambda p: p.stage.epochs),
    named(
        "optimizer steps per epoch (665K)",
        math.ceil(ROWS_665K / 128),
        "Trainer: len(dataloader) // accumulation, the last batch partial",
        steps_per_epoch(ROWS_665K),
        ROWS_665K // 128,
        LAST_BATCH,
    ),
    same(
        "longest sequence (model_max_length)",
        2048,
        f"{FINETUNE}: --model_max_length 2048",
        lambda p: p.stage.max_length or p.model.max_length,
    ),
    same("ZeRO stage", 3, f"{FINETUNE}: --deepspeed {ZERO3}", lambda p: p.zero["stage"]),
    same(
        "ZeRO stage3_prefetch_bucket_size",
        int(0.9 * HIDDEN * HIDDEN),
        f"{ZERO3}: auto -> 0.9 x hidden x hidden",
        lambda p: p.zero["stage3_prefetch_bucket_size"],
    ),
    same(
        "ZeRO stage3_param_persistence_threshold",
        10 * HIDDEN,
        f"{ZERO3}: auto -> 10 x hidden",
        lambda p: p.zero["stage3_param_persistence_threshold"],
    ),
    same("ZeRO stage3_max_live_parameters", 10**9, ZERO3, lambda p: p.zero["stage3_max_live_parameters"]),
    same("ZeRO stage3_max_reuse_distance", 10**9, ZERO3, lambda p: p.zero["stage3_max_reuse_distance"]),
    same(
        "ZeRO stage3_gather_16bit_weights_on_model_save",
        True,
        ZERO3,
        lambda p: p.zero["stage3_gather_16bit_weights_on_model_save"],
    ),
    same(
        "group by modality length",
        True,
        f"{FINETUNE}: --group_by_modality_length True",
        lambda p: p.stage.group_by_modality,
    ),
    same("image preprocessing", "pad", f"{FINETUNE}: --image_aspect_ratio pad", lambda p: p.model.image.aspect),
    same(
        "visual tokens m",
        tuple(range(2, 258, 2)),
        f"{FINETUNE}: --num_visual_tokens second_stage ({BUILDER}: random.choice(range(2, 258, 2)))",
        lambda p: token_schedule(p.stage, p.model).support,
    ),
    same(
        "starts from stage 1's connector",
        True,
        f"{FINETUNE}: --pretrain_mm_query_abstractor",
        lambda p: p.stage.init_from is not None,
    ),
    same(
        "trained parts",
        ("connector", "language_model"),
        f"{FINETUNE}: no tune_* flag (all but the tower)",
        lambda p: TRAINABLE_PARTS[p.stage.stage],
    ),
]


def preset(name: str) -> Preset:
    stage = load_config(StageSpec, preset_path("llava-7b", name))
    return Preset(stage, stage_model_spec(stage, load_config(ModelSpec, model_config_path(stage.model))))


@pytest.mark.parametrize(
    ("name", "row"),
    [("stage1", r) for r in STAGE1] + [("stage2", r) for r in STAGE2],
    ids=[f"stage1-{r.setting}" for r in STAGE1] + [f"stage2-{r.setting}" for r in STAGE2],
)
def test_the_llava_7b_presets_are_the_official_recipe_or_a_named_difference(name, row):
    ours = row.ours(preset(name))
    if row.differs is None:
        assert ours == row.official, f"{name} {row.setting}: ours {ours!r}, official {row.official!r} ({row.source})"
    else:
        assert row.differs.strip() and ours == row.ours_value != row.official, (
            f"{name} {row.setting}: ours {ours!r}; the table names {row.ours_value!r} (official {row.official!r}: "
            f"{row.differs})"
        )


def test_warmup_is_rounded_up_as_hugging_faces_trainer_does():
    two, model = preset("stage2").stage, preset("stage2").model  # 8 workers x 8 x 2: 128 rows a step, 2 epochs
    assert plan_steps(two, model, 128 * 1005).total_steps == 2010
    assert plan_steps(two, model, 128 * 1005).warmup_steps == 61  # ceil(0.03 x 2,010 = 60.3); rounding gave 60
    plan = plan_steps(two, model, 665_298)
    assert plan.warmup_steps == math.ceil(0.03 * plan.total_steps)


def test_the_hidden_size_is_the_llms_as_hf_reads_the_official_model():
    class Config:
        def __init__(self, **fields):
            self.__dict__.update(fields)

    class Model(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

    assert llm_hidden_size(Model(Config(text_config=Config(hidden_size=4096), hidden_size=1024))) == 4096
    assert llm_hidden_size(Model(Config(hidden_size=4096))) == 4096  # the official LlavaLlama's own config
    assert llm_hidden_size(torch.nn.Linear(2, 2)) is None
    # Without it, DeepSpeed's own defaults: no bucket entries are written.
    assert "reduce_bucket_size" not in deepspeed_config(preset("stage2").stage, use_gpu=True)["zero_optimization"]


def test_tf32_is_on_only_inside_the_training_loop_and_restored_after():
    """The flags are process-wide: the loop turns them on in its worker and puts them back, also when
    it fails, so importing or calling anything else of the library never changes them."""
    seen = []

    class FailsAfterLooking:  # the loop's first call is the strategy's
        def init_distributed(self):
            seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
            raise RuntimeError("stop here")

    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    # torch's matmul default, and cudnn's off too so that turning it on shows (restored below)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for tf32, inside in ((True, (True, True)), (False, (False, False))):
            stage = preset("stage1").stage.model_copy(update={"tf32": tf32})
            with pytest.raises(RuntimeError, match="stop here"):
                run, context = type("Run", (), {"stage": stage, "plan": None})(), type("Context", (), {"rank": 0})()
                loop.train_loop(run, context, FailsAfterLooking())
            assert seen.pop() == inside
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
