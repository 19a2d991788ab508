"""Inference engines: (image, question) -> answer at a chosen visual-token budget.

`Engine` is the interface evaluation (mqt_llava.eval.runner's actors) and serving (the tier
deployments of mqt_llava.serve.app) talk to: complete a batch of requests at one budget, and report
M and the context length. `InferenceEngine` is the Hugging Face implementation; a second backend is
one class with those members plus one `register_engine` line, and is chosen by name (`engine:` in
the serving spec, `engine` in the evaluation spec) without touching either caller.

Every engine renders the same prompt (vicuna_v1) and preprocesses images the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


@dataclass(frozen=True)
class Sampling:
    """How one answer is generated; requests with equal settings (and budget) share a batch."""

    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    stop: tuple[str, ...] = ()


class Engine(Protocol):
    """What evaluation and serving need from a backend."""

    @property
    def max_visual_tokens(self) -> int:
        """M, the largest budget."""

    @property
    def min_visual_tokens(self) -> int:
        """The smallest budget: budgets min..M are valid (1 for the MQT)."""

    @property
    def max_context(self) -> int:
        """The LLM's context length, visual tokens included."""

    def complete(
        self,
        requests: list[Request],
        num_visual_tokens: int,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        stop: list[str] | None = None,
    ) -> list[Completion]:
        """One completion per request, in order, all at budget `num_visual_tokens`."""


def complete_grouped(engine: Engine, jobs: list[tuple[Request, int, Sampling]]) -> list[Completion]:
    """Completions for (request, budget, sampling) jobs of mixed settings: one engine call per group
    that can share a batch (same budget, same sampling), answers back in the jobs' order."""
    groups: dict[tuple[int, Sampling], list[int]] = defaultdict(list)
    for i, (_, m, sampling) in enumerate(jobs):
        groups[(m, sampling)].append(i)
    results: list[Completion | None] = [None] * len(jobs)
    for (m, sampling), indices in groups.items():
        completions = engine.complete(
            [jobs[i][0] for i in indices], m, sampling.max_new_tokens, sampling.temperature, list(sampling.stop)
        )
        for i, completion in zip(indices, completions, strict=True):
            results[i] = completion
    return results  # type: ignore[return-value]


EngineLoader = Callable[..., Engine]  # (export, device, dtype) -> Engine
ENGINES: dict[str, EngineLoader] = {}


def register_engine(name: str, loader: EngineLoader) -> None:
    ENGINES[name] = loader


def load_engine(export: str | Path, backend: str = "hf", device: str = "cpu", dtype=None) -> Engine:
    """The engine `backend` names, loaded from an export directory."""
    try:
        loader = ENGINES[backend]
    except KeyError:
        raise ValueError(f"engine {backend!r} is not registered; known: {', '.join(sorted(ENGINES))}") from None
    return loader(export, device=device, dtype=dtype)


@dataclass
class PreparedBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor | None

    def to(self, device: torch.device) -> PreparedBatch:
        pixels = None if self.pixel_values is None else self.pixel_values.to(device)
        return PreparedBatch(self.input_ids.to(device), self.attention_mask.to(device), pixels)


class InferenceEngine:
    """The Hugging Face engine: the exported PreTrainedModel and its `generate`, batched with left
    padding."""

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

    @property
    def min_visual_tokens(self) -> int:
        return self.model.min_visual_tokens

    @property
    def max_context(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

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


register_engine("hf", InferenceEngine.from_export)
