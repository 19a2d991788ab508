"""The serving application's config: the export to load and the budget tiers (one Serve deployment
each), from `serve_apps/config.yaml`'s `args` or a Python dict."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mqt_llava.config import Spec
from mqt_llava.model.budgets import parse_budget
from mqt_llava.serve.auto import AutoSpec


class ReplicaSpec(Spec):
    """A deployment's replicas: how many, how they batch, what each gets."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(4.0, gt=0)
    max_batch_size: int = Field(8, ge=1)
    batch_wait_timeout_s: float = Field(0.02, ge=0)
    replica_cpus: float = Field(0.25, gt=0)
    torch_threads: int | None = Field(1, ge=1)

    @model_validator(mode="after")
    def _replicas(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"{getattr(self, 'name', 'shared')}: min_replicas > max_replicas")
        return self


class SharedSpec(ReplicaSpec):
    """The one deployment answering every tier. `in_ingress`: the HTTP ingress replicas hold the model
    themselves, so a request crosses one process less and its decoded image is not pickled (the
    ingress then scales with the model: `replica_cpus` is added to `ingress_cpus`); off: a deployment of
    its own behind the ingress."""

    in_ingress: bool = True


class TierSpec(ReplicaSpec):
    """One budget tier: a model id whose requests are answered at `visual_tokens` (an int, or "M"); by
    a deployment of its own, or by the shared one when the spec has `shared`."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    visual_tokens: int | Literal["M"]

    def budget(self, maximum: int, minimum: int = 1) -> int:
        return parse_budget(self.visual_tokens, maximum, f"tier {self.name}: visual_tokens", minimum)


class ServeSpec(Spec):
    model: str  # an export directory (what jobs/stage2.py writes)
    engine: str = "hf"  # the inference backend (mqt_llava.inference.ENGINES)
    use_gpu: bool | None = None  # one GPU per replica, bf16; None: if the cluster has GPUs (mqt_llava.devices)
    tiers: list[TierSpec] = Field(min_length=1)
    # One deployment answering every tier, each request at its tier's budget (one copy of the weights
    # for all budgets); the tiers' own replica settings are then unused. None: a deployment per tier.
    shared: SharedSpec | None = None
    api_key_env: str | None = None  # the variable holding the API key; named but unset: the app refuses to start
    allow_remote_without_key: bool = False  # without a key only loopback clients are served, unless this is on
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1)  # a base64 image of max_image_bytes fits
    max_json_depth: int = Field(32, ge=2)
    allow_remote_images: bool = False  # http(s) image URLs are fetched only when this is on
    max_images: int = Field(1, ge=1)  # the model takes one image per request
    max_image_pixels: int = Field(16 * 1024 * 1024, ge=1)
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    default_max_tokens: int = Field(64, ge=1)
    max_tokens_limit: int = Field(512, ge=1)
    ingress_cpus: float = Field(0.25, gt=0)
    ingress_max_ongoing_requests: int = Field(256, ge=1)
    auto: AutoSpec = AutoSpec()  # the `auto` model id: latency-targeting routing across the tiers

    @model_validator(mode="after")
    def _unique_names(self):
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        if "auto" in names:
            raise ValueError("`auto` is the latency-targeting router's model id, not a tier name")
        return self
