import pytest

from mqt_llava.config import ConfigError, load_config, model_config_path, preset_path
from mqt_llava.model.spec import ModelSpec
from mqt_llava.train.deepspeed_config import deepspeed_config
from mqt_llava.train.plan import plan_steps
from mqt_llava.train.spec import StageSpec


def stage2(**changes) -> StageSpec:
    fields = dict(
        model="tiny",
        stage="stage2",
        template="vicuna_v1",
        data="shards",
        global_batch_size=128,
        micro_batch_size=4,
        num_workers=2,
        lr=2e-5,
        zero_stage=3,
    )
    return StageSpec(**{**fields, **changes})


def test_accumulation_is_derived_so_one_config_means_one_optimisation_at_any_scale():
    assert stage2(num_workers=1).gradient_accumulation_steps == 32
    assert stage2(num_workers=8).gradient_accumulation_steps == 4
    assert stage2(num_workers=32).gradient_accumulation_steps == 1
    for workers in (1, 8, 32):
        config = deepspeed_config(stage2(num_workers=workers), use_gpu=True)
        assert config["train_batch_size"] == 128
        assert config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * workers == 128


def test_zero3_gathers_weights_for_export_and_bf16_only_on_gpu():
    config = deepspeed_config(stage2(), use_gpu=True)
    assert config["zero_optimization"]["stage"] == 3
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert config["bf16"]["enabled"] is True
    assert deepspeed_config(stage2(), use_gpu=False)["bf16"]["enabled"] is False
    assert deepspeed_config(stage2(zero_stage=2), use_gpu=False)["zero_optimization"]["stage"] == 2
    # The official files' buckets from the LLM's hidden size (tests/train/test_recipe_parity.py), for
    # ZeRO-2 and 3 only; ZeRO-0 and 1 get DeepSpeed's defaults.
    assert (
        deepspeed_config(stage2(zero_stage=2), True, hidden_size=64)["zero_optimization"]["reduce_bucket_size"] == 4096
    )
    assert deepspeed_config(stage2(zero_stage=1), True, hidden_size=64)["zero_optimization"] == {"stage": 1}
    assert deepspeed_config(stage2(max_grad_norm=0), True)["gradient_clipping"] == 0  # 0: no clipping


def test_a_batch_that_does_not_divide_is_refused_naming_the_fields():
    with pytest.raises(ValueError, match="global_batch_size 100 must be a multiple of micro_batch_size x num_workers"):
        stage2(global_batch_size=100, micro_batch_size=4, num_workers=8)


def test_a_template_from_the_other_stage_is_refused():
    with pytest.raises(ValueError, match="does not belong to stage2"):
        stage2(template="plain")


def test_the_papers_stage_configs_load_with_its_hyperparameters():
    one = load_config(StageSpec, preset_path("llava-7b", "stage1"))
    two = load_config(StageSpec, preset_path("llava-7b", "stage2"))
    assert (one.global_batch_size, one.lr, one.zero_stage, one.epochs) == (256, 1e-3, 2, 1)
    assert (two.global_batch_size, two.lr, two.zero_stage, two.epochs) == (128, 2e-5, 3, 2)
    # the global batches are the paper's; the micro-batches are what 40-GiB A100s hold (tests/train/test_memory.py)
    assert (one.gradient_accumulation_steps, two.gradient_accumulation_steps) == (1, 2)
    seven_b = load_config(ModelSpec, model_config_path(two.model))
    assert plan_steps(two, seven_b, rows=128 * 5000).warmup_steps == 300  # 3 % of 2 epochs x 5000 steps


def test_bad_stage_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"zero_stage"):
        load_config(StageSpec, preset_path("llava-7b", "stage2"), ["zero_stage=4"])
    with pytest.raises(ConfigError, match=r"lr"):
        load_config(StageSpec, preset_path("llava-7b", "stage2"), ["lr=-1"])
