"""The memory plan of the 7B preset, on the meta device: DeepSpeed's own estimators for the model
states, the activation model's terms, the configs fitting cluster.yaml's 40-GiB A100s, and a run
that would not fit refused with what to change."""

import pytest
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

from mqt_llava.config import ConfigError, load_config, model_config_path
from mqt_llava.model.spec import ModelSpec
from mqt_llava.train.memory import GIB, DoesNotFit, ModelCounts, check_fits, plan_memory
from mqt_llava.train.plan import resolve_run
from mqt_llava.train.spec import StageSpec

TOWER, LLM, EMBEDDINGS = 303_507_456, 6_738_415_616, 32_000 * 4096
POSITIONS = 256 * 1024  # the MQT's position table: trained in stage 1, frozen in stage 2 (the official recipe)


@pytest.fixture(scope="module")
def preset():
    model = load_config(ModelSpec, model_config_path("llava-7b"))
    stages = {s: load_config(StageSpec, f"llava-7b/{s}") for s in ("stage1", "stage2")}
    return model, stages, {s: ModelCounts.of(model, s) for s in stages}


def line(plan, what):
    return next(x for x in plan.lines if x.what == what).bytes


def test_counts_follow_what_each_stage_trains(preset):
    _, _, counts = preset
    one, two = counts["stage1"], counts["stage2"]
    connector = one.trained
    assert 0 < connector < 20_000_000 and one.frozen == TOWER + LLM
    assert two.trained == LLM + connector - POSITIONS and two.frozen == TOWER + POSITIONS
    assert one.largest_layer == two.largest_layer == EMBEDDINGS  # embed_tokens and lm_head
    assert (two.hidden, two.intermediate, two.llm_layers, two.vocab, two.grid) == (4096, 11008, 32, 32000, 576)


def test_model_states_are_deepspeeds_estimates_plus_the_frozen_weights(preset):
    model, stages, counts = preset
    two = plan_memory(stages["stage2"], model, 40, counts["stage2"])
    trained = LLM + counts["stage1"].trained - POSITIONS
    _, zero3, _ = estimate_zero3_model_states_mem_needs(
        trained, EMBEDDINGS, 8, cpu_offload=False, cpu_offload_params=False
    )
    assert line(two, "trained parameters' states") == zero3
    assert line(two, "frozen parameters") == 2 * (TOWER + POSITIONS) / 8  # ZeRO-3 partitions frozen ones too
    one = plan_memory(stages["stage1"], model, 40, counts["stage1"])
    _, zero2 = estimate_zero2_model_states_mem_needs(counts["stage1"].trained, 8, cpu_offload=False)
    assert line(one, "trained parameters' states") == zero2
    assert line(one, "frozen parameters") == 2 * (TOWER + LLM)  # ZeRO-2: every GPU holds the frozen LLM


def test_activations_scale_with_tokens_and_shrink_with_checkpointing(preset):
    model, stages, counts = preset
    base = stages["stage2"]
    at = {m: plan_memory(base.model_copy(update={"micro_batch_size": m}), model, 80, counts["stage2"]) for m in (4, 8)}
    assert line(at[8], "decoder activations") == 2 * line(at[4], "decoder activations")
    assert line(at[8], "logits and loss") == 8 * 2048 * 12 * 32000
    full = plan_memory(base.model_copy(update={"gradient_checkpointing": False}), model, 80, counts["stage2"])
    per_layer = 34 * 4096 + 8 * 11008
    assert line(full, "decoder activations") == 8 * 2048 * 32 * per_layer
    assert line(at[8], "decoder activations") == 8 * 2048 * (32 * 2 * 4096 + per_layer)
    assert at[8].total_gib == pytest.approx(sum(x.bytes for x in at[8].lines) / GIB)


def test_the_presets_fit_cluster_yamls_gpus_and_the_old_ones_are_refused_with_what_to_change(preset):
    model, stages, counts = preset
    for stage in stages.values():
        assert stage.resources.gpu_memory_gib == 40
        assert check_fits(stage, model, 40, "test").fits
    old_stage1 = stages["stage1"].model_copy(update={"gradient_checkpointing": False, "max_length": None})
    with pytest.raises(DoesNotFit, match=r"does not fit: .* Change: gradient_checkpointing: true") as refused:
        check_fits(old_stage1, model, 40, "test")
    assert "| **total** |" in str(refused.value) and isinstance(refused.value, ConfigError)
    old_stage2 = stages["stage2"].model_copy(update={"micro_batch_size": 16})
    plan = plan_memory(old_stage2, model, 40, counts["stage2"])
    assert not plan.fits and plan.advice[0].startswith("micro_batch_size: 8 (accumulation 2; the global batch stays")


def test_a_stage_max_length_above_the_models_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="max_length: 4096 is above the model's max_length 2048"):
        resolve_run("llava-7b/stage2", ["max_length=4096"], None, str(tmp_path))
