"""MQT-LLaVA as a Hugging Face model: frozen CLIP vision tower -> connector (the Matryoshka Query
Transformer, or any registered kind) -> any causal LM, in one `PreTrainedModel` that
`save_pretrained` / `from_pretrained` round-trip.

`input_ids` carry one placeholder id (`config.image_token_index`, LLaVA's -200) per image sample.
`forward` and `generate` take `num_visual_tokens=m`; the placeholder is expanded to exactly m visual
token embeddings before the LLM, and those positions are labelled -100.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    CLIPVisionModel,
    GenerationMixin,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import CausalLMOutputWithPast

from mqt_llava.model.budgets import check_budget
from mqt_llava.model.connectors import Connector, build_connector, connector_options
from mqt_llava.model.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX, MODEL_TYPE, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


@dataclass(repr=False)
class MQTLlavaConfig(PreTrainedConfig):
    """Vision tower config + LLM config + the connector's options (`connector`: a mapping with its
    `kind`, see mqt_llava.model.connectors). `max_visual_tokens` (M) is derived and stored, so a
    reader of config.json knows the budgets without knowing the connector.

    image_mean / image_std are the image processor's; images travel as uint8 and the model
    normalises them with these, so the data path never holds float pixels. image_aspect_ratio
    travels with an export so evaluation and serving preprocess as training did (LLaVA keeps it in
    its config too).
    """

    model_type = MODEL_TYPE
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    connector: dict | None = None  # None: the MQT with its default options
    max_visual_tokens: int | None = None  # derived from the connector (M)
    min_visual_tokens: int | None = None  # derived: the smallest budget (1 for the MQT; N for an MLP)
    vision_feature_layer: int = -2
    image_token_index: int = IMAGE_TOKEN_INDEX
    image_mean: list[float] | tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: list[float] | tuple[float, ...] = OPENAI_CLIP_STD
    image_aspect_ratio: str = "pad"  # how images are fitted to the tower's square: pad | square
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        options = connector_options(self.connector or {})
        self.connector = options.model_dump()
        grid = (self.vision_config.image_size // self.vision_config.patch_size) ** 2
        self.max_visual_tokens = options.max_tokens(grid)
        self.min_visual_tokens = options.min_tokens(grid)
        if self.image_aspect_ratio not in ("pad", "square"):
            raise ValueError(f"image_aspect_ratio must be pad or square, got {self.image_aspect_ratio!r}")
        layers = self.vision_config.num_hidden_layers
        if not -layers <= self.vision_feature_layer <= layers:
            raise ValueError(f"vision_feature_layer {self.vision_feature_layer} is outside the tower's {layers} layers")


@dataclass
class MultimodalInputs:
    """LLM inputs after the image placeholders became visual token embeddings."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None


class MQTLlavaForConditionalGeneration(PreTrainedModel, GenerationMixin):
    config: MQTLlavaConfig
    config_class = MQTLlavaConfig
    base_model_prefix = "mqt_llava"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(
        self,
        config: MQTLlavaConfig,
        vision_tower: CLIPVisionModel | None = None,
        language_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
        # Pretrained parts may be handed in (see `from_parts`) so a 7B LLM is not built twice.
        self.vision_tower = vision_tower or CLIPVisionModel(config.vision_config)
        self.language_model = language_model or AutoModelForCausalLM.from_config(config.text_config)
        vision = config.vision_config
        self.connector = build_connector(
            config.connector,
            vision.hidden_size,
            config.text_config.hidden_size,
            (vision.image_size // vision.patch_size) ** 2,
        )
        self.vision_tower.requires_grad_(False)
        self.register_buffer("image_mean", torch.tensor(config.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(config.image_std).view(1, 3, 1, 1), persistent=False)
        self.post_init()

    @classmethod
    def from_parts(
        cls,
        vision_tower: CLIPVisionModel,
        language_model: PreTrainedModel,
        **config_kwargs,
    ) -> MQTLlavaForConditionalGeneration:
        """Assemble a model around already-built (e.g. `from_pretrained`) vision tower and LLM; the
        connector is freshly initialised."""
        implementations = {
            "vision_config": vision_tower.config._attn_implementation,
            "text_config": language_model.config._attn_implementation,
        }
        config = MQTLlavaConfig(vision_config=vision_tower.config, text_config=language_model.config, **config_kwargs)
        model = cls(config, vision_tower=vision_tower, language_model=language_model)
        # The composite config shares the parts' configs and resets their attention implementation
        # on creation; without restoring it the parts fall back to a different attention path.
        model.set_attn_implementation(implementations)
        return model

    def _init_weights(self, module: nn.Module) -> None:
        # Only the connector and the pixel statistics are ours; the vision tower and LLM initialise
        # themselves. transformers 5 re-creates non-persistent buffers empty in `from_pretrained`
        # and runs this with guarded init functions that skip tensors it loaded, so buffers are
        # refilled here and loaded weights are left alone.
        if isinstance(module, Connector):
            module.init_weights()
        elif module is self:
            init.copy_(self.image_mean, torch.tensor(self.config.image_mean).view(1, 3, 1, 1))
            init.copy_(self.image_std, torch.tensor(self.config.image_std).view(1, 3, 1, 1))

    @property
    def max_visual_tokens(self) -> int:
        return self.connector.max_tokens

    @property
    def min_visual_tokens(self) -> int:
        return self.connector.min_tokens

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def resolve_num_visual_tokens(self, num_visual_tokens: int | None) -> int:
        m = self.max_visual_tokens if num_visual_tokens is None else num_visual_tokens
        return check_budget(m, self.max_visual_tokens, "num_visual_tokens", self.min_visual_tokens)

    def grid_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) images -> (n, H'W', vision_width) features of the selected layer, CLS dropped.

        uint8 pixels are normalised here with the processor's mean/std; float pixels are taken as
        already normalised (what a Hugging Face image processor returns).
        """
        if pixel_values.dtype == torch.uint8:
            pixel_values = (pixel_values.float() / 255.0 - self.image_mean) / self.image_std
        pixel_values = pixel_values.to(self.vision_tower.dtype)
        # The tower is frozen by design, so no activations are kept for it.
        with torch.no_grad():
            out = self.vision_tower(pixel_values, output_hidden_states=True)
        return out.hidden_states[self.config.vision_feature_layer][:, 1:]

    def encode_images(self, pixel_values: torch.Tensor, num_visual_tokens: int | None = None) -> torch.Tensor:
        """(n, 3, H, W) images -> (n, m, llm_width) visual tokens."""
        m = self.resolve_num_visual_tokens(num_visual_tokens)
        return self.connector(self.grid_features(pixel_values), m)

    def blank_image_tokens(self) -> torch.Tensor:
        """The image path run on one blank image. A training batch without images still goes through
        the vision tower and the MQT (its result weighted 0), as LLaVA does: otherwise data-parallel
        ranks disagree about which parameters take part in the step, and DeepSpeed's collectives
        mismatch (measured: ZeRO-2 gradient reduction and ZeRO-3 parameter gathers both fail when
        one rank's micro-batch is text-only and another's is not)."""
        size = self.config.vision_config.image_size
        blank = torch.zeros(1, 3, size, size, dtype=torch.uint8, device=self.image_mean.device)
        return self.encode_images(blank, 1)

    def merge_visual_tokens(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        labels: torch.LongTensor | None,
        num_visual_tokens: int,
        padding_side: str,
    ) -> MultimodalInputs:
        """Replace each sample's image placeholder by its m visual token embeddings.

        Samples without a placeholder are text-only and take no image; `pixel_values` holds one
        image per placeholder, in batch order. Sequences grow by m - 1 per image, so the batch is
        re-padded (right for training, left for generation).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        is_image = input_ids == self.config.image_token_index
        per_sample = is_image.sum(dim=1)
        if (per_sample > 1).any():
            raise ValueError("each sample may hold at most one image placeholder")
        num_images = int(per_sample.sum())
        given = 0 if pixel_values is None else pixel_values.shape[0]
        if given != num_images:
            raise ValueError(f"input_ids hold {num_images} image placeholders but {given} images were given")

        text_embeds = self.get_input_embeddings()(input_ids.masked_fill(is_image, 0))
        visual = self.encode_images(pixel_values, num_visual_tokens).to(text_embeds.dtype) if num_images else None
        if not num_images and self.training and torch.is_grad_enabled():
            text_embeds = text_embeds + 0.0 * self.blank_image_tokens().sum().to(text_embeds.dtype)

        embeds, new_labels = [], []
        image_i = 0
        for b in range(input_ids.shape[0]):
            keep = attention_mask[b].bool()
            sample_embeds = text_embeds[b][keep]
            sample_labels = labels[b][keep] if labels is not None else None
            placeholder = is_image[b][keep].nonzero()
            if len(placeholder):
                p = int(placeholder[0])
                sample_embeds = torch.cat([sample_embeds[:p], visual[image_i], sample_embeds[p + 1 :]])
                if sample_labels is not None:
                    ignored = sample_labels.new_full((num_visual_tokens,), IGNORE_INDEX)
                    sample_labels = torch.cat([sample_labels[:p], ignored, sample_labels[p + 1 :]])
                image_i += 1
            embeds.append(sample_embeds)
            new_labels.append(sample_labels)

        length = max(e.shape[0] for e in embeds)
        width = text_embeds.shape[-1]
        out_embeds = text_embeds.new_zeros(len(embeds), length, width)
        out_mask = attention_mask.new_zeros(len(embeds), length)
        out_labels = labels.new_full((len(embeds), length), IGNORE_INDEX) if labels is not None else None
        for b, e in enumerate(embeds):
            span = slice(length - e.shape[0], length) if padding_side == "left" else slice(0, e.shape[0])
            out_embeds[b, span] = e
            out_mask[b, span] = 1
            if out_labels is not None:
                out_labels[b, span] = new_labels[b]
        return MultimodalInputs(out_embeds, out_mask, out_labels)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        num_visual_tokens: int | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        m = self.resolve_num_visual_tokens(num_visual_tokens)
        merged = self.merge_visual_tokens(input_ids, attention_mask, pixel_values, labels, m, "right")
        return self.language_model(
            inputs_embeds=merged.inputs_embeds,
            attention_mask=merged.attention_mask,
            labels=merged.labels,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        num_visual_tokens: int | None = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Generate with m visual tokens; returns only the new tokens (as LLaVA does), since the
        prompt's image positions have no token ids."""
        m = self.resolve_num_visual_tokens(num_visual_tokens)
        merged = self.merge_visual_tokens(input_ids, attention_mask, pixel_values, None, m, "left")
        return self.language_model.generate(
            inputs_embeds=merged.inputs_embeds, attention_mask=merged.attention_mask, **generate_kwargs
        )


AutoConfig.register(MQTLlavaConfig.model_type, MQTLlavaConfig)
AutoModelForImageTextToText.register(MQTLlavaConfig, MQTLlavaForConditionalGeneration)
