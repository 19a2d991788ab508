"""The data room's job spec: how pipelines/prepare_llava.py turns a LLaVA JSON and its images into
Parquet shards (packaged as `<preset>/prepare_558k.yaml` and `<preset>/prepare_665k.yaml`)."""

from __future__ import annotations

from pydantic import Field, field_validator

from mqt_llava.config import Spec
from mqt_llava.data.conversation import TEMPLATES
from mqt_llava.data.images import DEFAULT_MAX_PIXELS


class PrepareSpec(Spec):
    """One conversion. Records are checked with the model's tokenizer and context length, so a
    record that would not fit is rejected here with its reason, not during training."""

    json_path: str = Field(description="the LLaVA JSON array (a local path or a pyarrow URI)")
    image_root: str | None = Field(None, description="the folder the records' `image` paths are relative to")
    output: str = Field(description="the shard directory (a local path or a pyarrow URI)")
    template: str = Field(description="the conversation template: plain (558K) or vicuna_v1 (665K)")
    model: str = Field("tiny", description="the model (a preset or a YAML) whose tokenizer and context apply")
    shard_mb: float = Field(256.0, gt=0, description="target shard size")
    max_records_per_shard: int = Field(50_000, ge=1)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="larger images are rejected")
    max_in_flight: int = Field(4, ge=1, description="shards converted at once (bounds memory)")

    @field_validator("template")
    @classmethod
    def _known_template(cls, name: str) -> str:
        if name not in TEMPLATES:
            raise ValueError(f"unknown template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
        return name
