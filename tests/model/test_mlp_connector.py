"""LLaVA-1.5's connector as a baseline kind: the two-layer GELU MLP over every grid feature, with N
tokens as its one budget, built, exported and loaded like the MQT, trained at N whatever the
schedule, counted by the FLOPs tool and usable as an ablation variant."""

import pytest
import torch
import yaml
from torch import nn

from mqt_llava.ablation.spec import Variant
from mqt_llava.config import load_config
from mqt_llava.eval.flops import FlopsModel
from mqt_llava.model.budgets import BudgetError, default_budgets, parse_budgets
from mqt_llava.model.builder import build_model
from mqt_llava.model.connectors.mlp import MLPProjector
from mqt_llava.model.export import save_export, visual_token_range
from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration
from mqt_llava.model.spec import ModelSpec, connector_token_range
from mqt_llava.train.plan import token_schedule
from mqt_llava.train.spec import StageSpec
from small_model import small_spec

GRID = 16  # small_spec: a 32-px image in 8-px patches


def mlp_spec(**options) -> ModelSpec:
    return ModelSpec(**small_spec().model_dump() | {"connector": {"kind": "mlp", **options}})


@pytest.fixture
def mlp_built():
    torch.manual_seed(0)
    built = build_model(mlp_spec())
    built.model.eval()
    return built


def test_it_is_llavas_mlp2x_gelu_over_every_grid_feature(mlp_built):
    connector = mlp_built.model.connector
    assert isinstance(connector, MLPProjector)
    first, gelu, second = connector.layers
    assert (first.in_features, first.out_features) == (32, 48) and isinstance(gelu, nn.GELU)
    assert (second.in_features, second.out_features) == (48, 48)
    assert [name for name, _ in connector.named_parameters()] == [
        "layers.0.weight",
        "layers.0.bias",
        "layers.2.weight",
        "layers.2.bias",
    ]
    grid = torch.randn(2, GRID, 32)
    expected = second(torch.nn.functional.gelu(first(grid)))
    torch.testing.assert_close(connector(grid), expected)
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert mlp_built.model.encode_images(pixels).shape == (2, GRID, 48)
    one_layer = build_model(mlp_spec(depth=1)).model.connector
    assert [type(m) for m in one_layer.layers] == [nn.Linear]  # LLaVA-1's linear projection


def test_its_one_budget_is_n_and_every_check_says_so(mlp_built):
    model = mlp_built.model
    assert (model.min_visual_tokens, model.max_visual_tokens) == (GRID, GRID)
    assert connector_token_range(mlp_spec()) == (GRID, GRID) and connector_token_range(small_spec()) == (1, 8)
    pixels = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(BudgetError, match="num_visual_tokens: 4 is not 16 \\(the model's connector gives exactly 16"):
        model.encode_images(pixels, 4)
    assert model.encode_images(pixels, GRID).shape[1] == GRID
    assert default_budgets(GRID, minimum=GRID) == [GRID]
    with pytest.raises(BudgetError, match="budgets: 2, 8 is not 16"):
        parse_budgets("2,8,M", GRID, minimum=GRID)


def test_it_trains_at_n_whatever_the_schedule():
    stage = StageSpec(
        model="tiny",
        stage="stage2",
        template="vicuna_v1",
        data="-",
        global_batch_size=2,
        micro_batch_size=2,
        lr=1e-3,
        schedule={"kind": "linear", "step": 2},
    )
    assert token_schedule(stage, mlp_spec()).support == (GRID,)
    assert token_schedule(stage, small_spec()).support == (2, 4, 6, 8)


def test_export_round_trip_keeps_weights_budget_and_logits(mlp_built, tmp_path):
    save_export(mlp_built, tmp_path)
    assert visual_token_range(tmp_path) == (GRID, GRID)
    loaded = MQTLlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    for name, tensor in mlp_built.model.connector.state_dict().items():
        torch.testing.assert_close(loaded.connector.state_dict()[name], tensor)
    ids = torch.tensor([[1, -200, 5, 6, 7]])
    pixels = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = mlp_built.model(input_ids=ids, pixel_values=pixels).logits
        b = loaded(input_ids=ids, pixel_values=pixels).logits
    assert a.shape[1] == 4 + GRID
    torch.testing.assert_close(a, b)


def test_the_flops_tools_llava_row_is_this_connector(tmp_path):
    counter = FlopsModel(mlp_spec())
    own, llava = counter.at_budget(GRID, 8), counter.llava_mlp(8)
    assert own.connector == llava.connector > 0 and own.total == llava.total
    # 2 FLOPs per multiply-add: (32 x 48 + 48 x 48) per grid feature
    assert llava.connector == pytest.approx(2 * GRID * (32 * 48 + 48 * 48), rel=0.01)


def test_it_is_an_ablation_variant_that_replaces_the_preset_connector(tmp_path):
    preset = tmp_path / "model.yaml"
    preset.write_text(yaml.safe_dump(small_spec(keys="position_only").model_dump()))
    baseline, variant = Variant(keys="position_only"), Variant(keys="position_only", connector="mlp")
    assert variant.label(baseline) == "mlp-connector/seed0"
    mlp = load_config(ModelSpec, preset, variant.overrides("model")).connector
    assert mlp.model_dump() == {"kind": "mlp", "depth": 2}
    mqt = load_config(ModelSpec, preset, baseline.overrides("model")).connector
    assert mqt.kind == "mqt" and mqt.num_queries == 8 and mqt.keys == "position_only"  # the preset's own MQT
