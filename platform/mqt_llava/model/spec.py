"""The model's spec: its vision tower, LLM, tokenizer, connector and image preprocessing, as a model
YAML (a preset's `model.yaml`) declares them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SerializeAsAny, model_validator
from transformers import CLIPVisionConfig

from mqt_llava.config import Spec
from mqt_llava.model.connectors import connector_options
from mqt_llava.model.storage import pretrained_location
from mqt_llava.model.tokenizer import TokenizerSpec


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


# A connector's options: validated by its kind's own options class (mqt_llava.model.connectors),
# dumped with all of that class's fields.
ConnectorOptions = Annotated[SerializeAsAny[Spec], BeforeValidator(connector_options)]


class ImageSpec(Spec):
    aspect: Literal["pad", "square"] = "pad"


class ModelSpec(Spec):
    name: str
    vision_tower: VisionTowerSpec
    llm: LLMSpec
    tokenizer: TokenizerSpec = TokenizerSpec()
    connector: ConnectorOptions = Field(default_factory=lambda: connector_options({"kind": "mqt"}))
    image: ImageSpec = ImageSpec()
    max_length: int = Field(2048, ge=8, description="LLM context, visual tokens included")


def vision_architecture(spec: ModelSpec) -> CLIPVisionConfig:
    part = spec.vision_tower
    if part.architecture is not None:
        return CLIPVisionConfig(**part.architecture)
    return CLIPVisionConfig.from_pretrained(pretrained_location(part.pretrained))


def max_visual_tokens(spec: ModelSpec) -> int:
    """M, the largest budget the spec's connector gives over its vision tower's grid."""
    return connector_token_range(spec)[1]


def connector_token_range(spec: ModelSpec) -> tuple[int, int]:
    """(smallest, largest) budget the spec's connector gives over its vision tower's grid: (1, M)
    for the MQT, (N, N) for LLaVA-1.5's MLP. An export's range, read from its config alone:
    mqt_llava.model.export.visual_token_range."""
    vision = vision_architecture(spec)
    grid = (vision.image_size // vision.patch_size) ** 2
    return spec.connector.min_tokens(grid), spec.connector.max_tokens(grid)
