"""The one inference engine: (image, question) -> answer at a chosen visual-token budget.

Evaluation and serving both go through it, so the prompt (vicuna_v1), the image preprocessing and
the padding are the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mqt_llava.data.conversation import generation_prompt, tokenize_prompt
from mqt_llava.data.images import Aspect, ImageSettings, preprocess_image
from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration


@dataclass
class Request:
    question: str
    image: Image.Image | None = None


@dataclass
class Completion:
    text: str
    prompt_tokens: int  # visual tokens included
    completion_tokens: int  # EOS included when generated
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


@dataclass
class PreparedBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor | None

    def to(self, device: torch.device) -> PreparedBatch:
        pixels = None if self.pixel_values is None else self.pixel_values.to(device)
        return PreparedBatch(self.input_ids.to(device), self.attention_mask.to(device), pixels)


class InferenceEngine:
    def __init__(
        self,
        model: MQTLlavaForConditionalGeneration,
        tokenizer,
        image_settings: ImageSettings,
        aspect: Aspect = "pad",
        template: str = "vicuna_v1",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_settings = image_settings
        self.aspect = aspect
        self.template = template

    @classmethod
    def from_built(cls, built) -> InferenceEngine:
        return cls(built.model, built.tokenizer, built.image_settings, built.model.config.image_aspect_ratio)

    @classmethod
    def from_export(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None) -> InferenceEngine:
        """An export directory: the model, its tokenizer and image processor saved side by side."""
        from transformers import AutoTokenizer, CLIPImageProcessorPil

        model = MQTLlavaForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device)
        settings = ImageSettings.from_processor(CLIPImageProcessorPil.from_pretrained(path))
        return cls(model, AutoTokenizer.from_pretrained(path), settings, model.config.image_aspect_ratio)

    @property
    def max_visual_tokens(self) -> int:
        return self.model.max_visual_tokens

    def prepare(self, requests: list[Request]) -> PreparedBatch:
        """Tokenize and left-pad (decoder-only generation) a batch; one image per image request."""
        ids = [
            tokenize_prompt(generation_prompt(r.question, self.template, r.image is not None), self.tokenizer)
            for r in requests
        ]
        length = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), length), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros(len(ids), length, dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, length - len(x) :] = torch.tensor(x)
            attention_mask[i, length - len(x) :] = 1
        images = [preprocess_image(r.image, self.image_settings, self.aspect) for r in requests if r.image is not None]
        pixel_values = torch.from_numpy(np.stack(images)) if images else None
        return PreparedBatch(input_ids, attention_mask, pixel_values).to(self.model.device)

    @torch.inference_mode()
    def complete(
        self,
        requests: list[Request],
        num_visual_tokens: int,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> list[Completion]:
        """Answers with their token counts: greedy at temperature 0, else sampled at that temperature
        over the whole vocabulary. An answer ends at EOS, at `max_new_tokens`, or before the first
        of the `stop` strings."""
        batch = self.prepare(requests)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature <= 0:
            sampling = {"do_sample": False}
        output = self.model.generate(
            batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values,
            num_visual_tokens=num_visual_tokens,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            **sampling,
        )
        completions = []
        for i, (request, tokens) in enumerate(zip(requests, output.tolist(), strict=True)):
            ended = self.tokenizer.eos_token_id in tokens
            generated = tokens[: tokens.index(self.tokenizer.eos_token_id) + 1] if ended else tokens
            text = self.tokenizer.decode(generated, skip_special_tokens=True).strip()
            finish = "stop" if ended else "length"
            for s in stop or []:
                if s and s in text:
                    text, finish = text.split(s)[0], "stop"
            # The image placeholder is one token of the prompt; the LLM sees m visual tokens instead.
            prompt = int(batch.attention_mask[i].sum()) + (num_visual_tokens - 1 if request.image is not None else 0)
            completions.append(Completion(text, prompt, len(generated), finish))
        return completions

    def generate(self, requests: list[Request], num_visual_tokens: int, max_new_tokens: int = 32) -> list[str]:
        """Greedy answers, one per request."""
        return [c.text for c in self.complete(requests, num_visual_tokens, max_new_tokens)]

    def forward(self, requests: list[Request], num_visual_tokens: int) -> torch.Tensor:
        """One prefill pass over requests (preparation included); returns the logits."""
        return self.prefill(self.prepare(requests), num_visual_tokens)

    @torch.inference_mode()
    def prefill(self, batch: PreparedBatch, num_visual_tokens: int) -> torch.Tensor:
        """One prefill pass over an already prepared batch: the cost a budget changes."""
        return self.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values,
            num_visual_tokens=num_visual_tokens,
        ).logits
