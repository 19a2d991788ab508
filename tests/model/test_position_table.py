"""The MQT's position table as the official code has it: a parameter, trained in the stages its
`position_table` option names, saved, exported and loaded as it is; exports written while it was a
fixed, unsaved buffer still load (with the sin-cos table they computed with)."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText

from mqt_llava.config import load_config, preset_path
from mqt_llava.model.builder import build_model
from mqt_llava.model.connectors.mqt import POSITION_TABLES, sincos_2d
from mqt_llava.model.export import load_part_state, read_config, save_export
from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration
from mqt_llava.model.spec import ModelSpec
from mqt_llava.model.stages import configure_trainable, parameter_report
from small_model import small_spec

TRAINED_IN = {"fixed": set(), "trained_in_stage1": {"stage1"}, "trained": {"stage1", "stage2"}}


def built_with(position_table: str, keys: str = "position_only"):
    torch.manual_seed(0)
    built = build_model(small_spec(position_table=position_table, keys=keys))
    built.model.eval()
    return built


def perturb_table(built, seed: int = 1) -> torch.Tensor:
    """What training does to the table: sin-cos plus an offset of its own."""
    table = built.model.connector.pos_embed
    with torch.no_grad():
        table.add_(0.05 * torch.randn(table.shape, generator=torch.Generator().manual_seed(seed)))
    return table.detach().clone()


def image_tokens(model, m: int = 5) -> torch.Tensor:
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.encode_images(pixels, m)


@pytest.mark.parametrize("position_table", POSITION_TABLES)
def test_each_stage_trains_the_table_as_the_option_says(position_table):
    built = built_with(position_table)
    table = built.model.connector.pos_embed
    assert isinstance(table, torch.nn.Parameter)
    torch.testing.assert_close(table.detach(), sincos_2d(built.model.connector.query_side, 32))
    for stage in ("stage1", "stage2"):
        configure_trainable(built.model, stage)
        assert table.requires_grad is (stage in TRAINED_IN[position_table])
        others = [p for name, p in built.model.connector.named_parameters() if name != "pos_embed"]
        assert all(p.requires_grad for p in others)  # the rest of the connector trains in both stages
        report = parameter_report(built.model)
        fixed = 0 if table.requires_grad else table.numel()
        assert report["connector"].trainable == report["connector"].total - fixed


def test_stage_1_gives_the_trained_table_a_gradient_through_queries_and_keys():
    built = built_with("trained_in_stage1")
    configure_trainable(built.model, "stage1")
    connector = built.model.connector
    features = torch.randn(2, 16, 32)
    connector(features, 3).sum().backward()
    grad = connector.pos_embed.grad
    assert grad is not None
    # Keys see the whole (resized) table, queries its first m rows: every row gets a gradient.
    assert (grad.abs().sum(dim=1) > 0).all()


def test_a_trained_table_round_trips_through_export_from_pretrained_and_part_loading(tmp_path):
    built = built_with("trained_in_stage1")
    table = perturb_table(built)
    before = image_tokens(built.model)
    save_export(built, tmp_path)
    assert read_config(tmp_path)["connector"]["position_table"] == "trained_in_stage1"
    assert torch.equal(load_file(str(tmp_path / "model.safetensors"))["connector.pos_embed"], table)
    for loader in (MQTLlavaForConditionalGeneration, AutoModelForImageTextToText):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert torch.equal(loaded.connector.pos_embed.detach(), table)
        assert torch.equal(image_tokens(loaded), before)
    part = load_part_state(tmp_path, "connector")
    assert torch.equal(part["pos_embed"], table)
    fresh = built_with("trained_in_stage1")  # stage 2 starting from stage 1's connector (init_from)
    fresh.model.connector.load_state_dict(part)
    assert torch.equal(fresh.model.connector.pos_embed.detach(), table)


def old_export(built, path):
    """An export as the platform wrote it while the table was a non-persistent buffer: the same
    files without `connector.pos_embed`."""
    save_export(built, path)
    weights = load_file(str(path / "model.safetensors"))
    del weights["connector.pos_embed"]
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("keys", ["content_and_position", "position_only"])
def test_an_export_without_a_table_loads_with_the_sin_cos_table_it_computed_with(tmp_path, keys):
    built = built_with("fixed", keys)
    before = image_tokens(built.model)
    old_export(built, tmp_path)
    loaded = MQTLlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.connector.pos_embed.detach(), sincos_2d(loaded.connector.query_side, 32))
    assert torch.equal(image_tokens(loaded), before)
    part = load_part_state(tmp_path, "connector")
    assert "pos_embed" not in part
    torch.manual_seed(5)
    fresh = build_model(small_spec(keys=keys))  # other random weights; a fixed table, as old exports had
    fresh.model.eval()
    fresh.model.connector.load_state_dict(part)  # strict, as init_from loads a stage-1 export
    assert torch.equal(fresh.model.connector.pos_embed.detach(), loaded.connector.pos_embed.detach())
    features = torch.randn(2, 16, 32)
    with torch.no_grad():
        assert torch.equal(fresh.model.connector(features, 5), loaded.connector(features, 5))


@pytest.mark.parametrize("position_table", ["trained_in_stage1", "trained"])
def test_a_strict_load_without_a_trained_table_is_refused(position_table):
    """A trained table is weights: a state without it must not load as the sin-cos table in its place."""
    built = built_with(position_table)
    others = {k: v for k, v in built.model.connector.state_dict().items() if k != "pos_embed"}
    with pytest.raises(RuntimeError, match="pos_embed"):
        built.model.connector.load_state_dict(others)


def test_a_partial_load_keeps_the_table_the_connector_holds():
    """Loading only trained weights (strict=False, as a checkpoint's export does) must not reset a
    table that was loaded before and is frozen in this stage."""
    built = built_with("trained_in_stage1")
    table = perturb_table(built)
    others = {k: v for k, v in built.model.connector.state_dict().items() if k != "pos_embed"}
    built.model.connector.load_state_dict(others, strict=False)
    assert torch.equal(built.model.connector.pos_embed.detach(), table)


def test_the_llava_7b_preset_is_the_official_connector():
    spec = load_config(ModelSpec, preset_path("llava-7b"))
    assert spec.connector.keys == "position_only"
    assert spec.connector.position_table == "trained_in_stage1"
    model = build_model(spec, device="meta").model
    # The official abstractor's count: query and pos_embed, MultiheadAttention, three LayerNorms, proj.
    official = 2 * 256 * 1024 + 4 * (1024 * 1024 + 1024) + 3 * 2 * 1024 + 1024 * 4096
    assert parameter_report(model)["connector"].total == official == 8_923_136
    configure_trainable(model, "stage1")
    assert model.connector.pos_embed.requires_grad and model.connector.pos_embed.shape == (256, 1024)
    configure_trainable(model, "stage2")
    assert not model.connector.pos_embed.requires_grad  # the official stage 2 keeps stage 1's table


def test_an_unknown_position_table_option_is_refused():
    with pytest.raises(ValueError, match="position_table"):
        small_spec(position_table="learned")


def test_the_keys_table_is_resized_in_fp32_whatever_the_tables_dtype():
    """As the official code: bicubic resize of the fp32 table, then the cast (the table trains in bf16)."""
    built = built_with("trained")
    perturb_table(built)
    connector = built.model.connector.to(torch.bfloat16)
    table = connector.pos_embed.detach()
    square = table.float().reshape(1, 3, 3, -1).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(square, size=(4, 4), mode="bicubic", align_corners=False)
    expected = resized.permute(0, 2, 3, 1).reshape(16, -1).to(torch.bfloat16)
    assert torch.equal(connector.key_positions(16), expected)
