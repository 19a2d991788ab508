"""A second connector kind is one class plus one registration: built from the model YAML's
`connector:` section, trained by stage (the part is `connector`), exported and loaded, with M read
from the export without knowing the kind. The kind here lives in this test file only."""

from typing import Literal

import pytest
import torch
from pydantic import Field
from torch import nn

from mqt_llava.model.builder import build_model
from mqt_llava.model.connectors import CONNECTORS, Connector, ConnectorOptions, register_connector
from mqt_llava.model.export import max_visual_tokens as export_max_visual_tokens
from mqt_llava.model.export import save_export
from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration
from mqt_llava.model.spec import ModelSpec, max_visual_tokens
from mqt_llava.model.stages import configure_trainable
from small_model import small_spec


class PoolOptions(ConnectorOptions):
    kind: Literal["test-pool"] = "test-pool"
    tokens: int = Field(4, ge=1)

    def max_tokens(self, grid_positions: int) -> int:
        return self.tokens


class PoolConnector(Connector):
    """Average-pools the grid into `tokens` groups, then projects: nested like the MQT only in name."""

    options_class = PoolOptions

    def __init__(self, tokens: int, vision_width: int, llm_width: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.proj = nn.Linear(vision_width, llm_width)

    @classmethod
    def from_options(cls, options, vision_width, llm_width, grid_positions):
        return cls(options.tokens, vision_width, llm_width)

    @property
    def max_tokens(self) -> int:
        return self.tokens

    def forward(self, grid_features, num_tokens=None):
        m = self.tokens if num_tokens is None else num_tokens
        pooled = nn.functional.adaptive_avg_pool1d(grid_features.transpose(1, 2), self.tokens).transpose(1, 2)
        return self.proj(pooled[:, :m])

    def init_weights(self) -> None:
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)


@pytest.fixture
def pool_kind():
    register_connector(PoolConnector)
    yield
    del CONNECTORS["test-pool"]


def test_a_registered_kind_is_built_trained_exported_and_loaded(pool_kind, tmp_path):
    spec = ModelSpec(**small_spec().model_dump() | {"connector": {"kind": "test-pool", "tokens": 3}})
    assert max_visual_tokens(spec) == 3
    torch.manual_seed(0)
    built = build_model(spec)
    assert isinstance(built.model.connector, PoolConnector) and built.model.max_visual_tokens == 3
    configure_trainable(built.model, "stage1")
    assert {n.split(".")[0] for n, p in built.model.named_parameters() if p.requires_grad} == {"connector"}
    with pytest.raises(ValueError, match="num_visual_tokens: 4 outside 1..3"):
        built.model.encode_images(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 4)

    save_export(built, tmp_path)
    assert export_max_visual_tokens(tmp_path) == 3
    loaded = MQTLlavaForConditionalGeneration.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.connector.proj.weight, built.model.connector.proj.weight)


def test_an_unregistered_kind_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="connector kind 'test-pool' is not registered"):
        ModelSpec(**small_spec().model_dump() | {"connector": {"kind": "test-pool"}})
