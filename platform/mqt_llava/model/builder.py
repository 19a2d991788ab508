"""Build an MQT-LLaVA model, its tokenizer and its image settings from a `ModelSpec`.

Every preset takes the same path: parts with `pretrained` load with `from_pretrained` (a hub name
for llava-7b, a directory the platform wrote for tiny), parts with only an `architecture` are
built with random weights. `device="meta"` sizes any preset without weights or downloads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    CLIPImageProcessorPil,
    CLIPVisionModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration
from mqt_llava.model.spec import ModelSpec, vision_architecture
from mqt_llava.model.storage import pretrained_location
from mqt_llava.model.tokenizer import load_tokenizer


@dataclass
class BuiltModel:
    model: MQTLlavaForConditionalGeneration
    tokenizer: PreTrainedTokenizerBase | None  # None on the meta device
    image_settings: ImageSettings
    spec: ModelSpec


def image_settings_for(spec: ModelSpec) -> ImageSettings:
    """The vision tower's own processor settings when it has them, else a square of its input size
    with OpenAI CLIP statistics."""
    if spec.vision_tower.pretrained is not None:
        location = pretrained_location(spec.vision_tower.pretrained)
        try:
            return ImageSettings.from_processor(CLIPImageProcessorPil.from_pretrained(location))
        except OSError:
            pass  # a tower saved without preprocessor_config.json
    return ImageSettings.square_of(vision_architecture(spec).image_size)


def build_vision_tower(spec: ModelSpec, weights: bool) -> CLIPVisionModel:
    if weights and spec.vision_tower.pretrained is not None:
        # A CLIP checkpoint (openai/clip-vit-large-patch14-336, or the tiny preset's) holds the text
        # tower too: its keys are expected to go unused, and transformers' report of them (a long
        # table, once per worker) is silenced. A *missing* vision weight is an error.
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            tower, info = CLIPVisionModel.from_pretrained(
                pretrained_location(spec.vision_tower.pretrained), output_loading_info=True
            )
        finally:
            hf_logging.set_verbosity(previous)
        if info["missing_keys"] or info["mismatched_keys"]:
            raise ValueError(
                f"vision_tower.pretrained {spec.vision_tower.pretrained}: missing {sorted(info['missing_keys'])[:5]}, "
                f"mismatched {sorted(info['mismatched_keys'])[:5]}"
            )
        return tower
    return CLIPVisionModel(vision_architecture(spec))


def build_language_model(spec: ModelSpec, weights: bool, tokenizer: PreTrainedTokenizerBase | None):
    part = spec.llm
    if weights and part.pretrained is not None:
        return AutoModelForCausalLM.from_pretrained(pretrained_location(part.pretrained))
    if part.architecture is not None:
        fields = dict(part.architecture)
        if tokenizer is not None and weights:
            # A randomly initialised LLM is sized to the tokenizer it will be trained with.
            fields |= {
                "vocab_size": len(tokenizer),
                "bos_token_id": tokenizer.bos_token_id,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
            }
        config = AutoConfig.for_model(**fields)
    else:
        config = AutoConfig.from_pretrained(pretrained_location(part.pretrained))
    return AutoModelForCausalLM.from_config(config)


def build_model(
    spec: ModelSpec, device: str = "cpu", random_weights: bool = False, seed: int | None = None
) -> BuiltModel:
    """`device="meta"` builds the full architecture without allocating or loading weights;
    `random_weights` builds it on `device` from the parts' `architecture` with random weights and no
    tokenizer (a 7B-shaped model on a GPU with nothing downloaded: benchmarks/gpu_check.py).
    `seed` draws the random-init parts from that seed (every rank of a run the same, and an export of
    its checkpoint again), in a fork of the global RNG that leaves the caller's as it was."""
    if seed is not None:
        with torch.random.fork_rng(devices=[] if device in ("cpu", "meta") else None):
            torch.manual_seed(seed)
            return build_model(spec, device, random_weights)
    weights = device != "meta" and not random_weights
    tokenizer = load_tokenizer(spec.tokenizer) if weights else None
    settings = image_settings_for(spec) if weights else ImageSettings.square_of(vision_architecture(spec).image_size)
    with torch.device(device):
        model = MQTLlavaForConditionalGeneration.from_parts(
            build_vision_tower(spec, weights),
            build_language_model(spec, weights, tokenizer),
            connector=spec.connector.model_dump(),
            vision_feature_layer=spec.vision_tower.feature_layer,
            image_mean=list(settings.mean),
            image_std=list(settings.std),
            image_aspect_ratio=spec.image.aspect,
        )
    if tokenizer is not None and model.language_model.config.pad_token_id is None:
        model.language_model.config.pad_token_id = tokenizer.pad_token_id
    return BuiltModel(model=model, tokenizer=tokenizer, image_settings=settings, spec=spec)
