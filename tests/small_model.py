"""The smallest MQT-LLaVA the tests build: importable by name (`from small_model import small_spec`)
from any test directory, unlike a conftest."""

from __future__ import annotations

from mqt_llava.model.spec import LLMSpec, ModelSpec, VisionTowerSpec


def small_spec(**connector) -> ModelSpec:
    """Smaller than the tiny preset so unit tests stay fast: a 4x4 grid, M = 8."""
    return ModelSpec(
        name="test",
        vision_tower=VisionTowerSpec(
            architecture=dict(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
            )
        ),
        llm=LLMSpec(
            architecture=dict(
                model_type="llama",
                hidden_size=48,
                intermediate_size=96,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=512,
            )
        ),
        connector={"kind": "mqt", "num_queries": 8, "num_heads": 2, **connector},
        max_length=512,
    )
