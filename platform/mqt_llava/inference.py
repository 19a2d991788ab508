"""Inference engines: (image, question) -> answer at a chosen visual-token budget.

`Engine` is the interface evaluation (mqt_llava.eval.runner's actors) and serving (the tier
deployments of mqt_llava.serve.app) talk to: complete a batch of requests at one budget, and report
M and the context length. `InferenceEngine` is the Hugging Face implementation; a second backend is
one class with those members plus one `register_engine` line, and is chosen by name (`engine:` in
the serving spec, `engine` in the evaluation spec) without touching either caller.

Every engine renders the same prompt (vicuna_v1) and preprocesses images the same way.
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessorList, StopStringCriteria, TemperatureLogitsWarper, TopPLogitsWarper

from mqt_llava.data.conversation import generation_prompt, tokenize_prompt
from mqt_llava.data.images import Aspect, preprocess_image
from mqt_llava.devices import Placement
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration


@dataclass
class Request:
    question: str
    image: Image.Image | None = None
    history: tuple[tuple[str, str], ...] = ()  # earlier (user, assistant) turns; the image is in the first
    system: str | None = None  # replaces the template's system prompt


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
    top_p: float = 1.0
    seed: int | None = None  # a seeded answer is generated alone: batch mates would change its draws

    def kwargs(self) -> dict:
        """The arguments of `Engine.complete` these settings stand for."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "stop": list(self.stop),
            "top_p": self.top_p,
            "seed": self.seed,
        }


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

    def prompt_tokens(self, request: Request, num_visual_tokens: int) -> int:
        """The request's prompt length in the LLM, its visual tokens included."""

    def complete(
        self,
        requests: list[Request],
        num_visual_tokens: int,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        stop: list[str] | None = None,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[Completion]:
        """One completion per request, in order, all at budget `num_visual_tokens`."""

    def stream(
        self, request: Request, num_visual_tokens: int, sampling: Sampling, cancel: threading.Event | None = None
    ) -> Iterator[str | Completion]:
        """One request's answer as text deltas while it is generated, then its Completion (whose
        text the deltas add up to). Setting `cancel` stops the generation at its next token."""


def complete_grouped(engine: Engine, jobs: list[tuple[Request, int, Sampling]]) -> list[Completion]:
    """Completions for (request, budget, sampling) jobs of mixed settings: one engine call per group
    that can share a batch (same budget, same sampling; a seeded job alone), answers back in the jobs'
    order."""
    groups: dict[tuple[int, Sampling, int], list[int]] = defaultdict(list)
    for i, (_, m, sampling) in enumerate(jobs):
        groups[(m, sampling, i if sampling.seed is not None else -1)].append(i)
    results: list[Completion | None] = [None] * len(jobs)
    for (m, sampling, _), indices in groups.items():
        completions = engine.complete([jobs[i][0] for i in indices], m, **sampling.kwargs())
        for i, completion in zip(indices, completions, strict=True):
            results[i] = completion
    return results  # type: ignore[return-value]


EngineLoader = Callable[..., Engine]  # (export, device, dtype) -> Engine
ENGINES: dict[str, EngineLoader] = {}


def register_engine(name: str, loader: EngineLoader) -> None:
    """Makes a backend loadable by name (`engine:` in the evaluation and serving specs, `backend=` in
    the lmms-eval plugin). Evaluation actors and serving tiers load engines in their own processes,
    so the registration must run when those import this module: in a module imported at the bottom
    of this file."""
    if ENGINES.get(name, loader) != loader:
        raise ValueError(f"engine {name!r} is registered already (by {ENGINES[name].__qualname__})")
    ENGINES[name] = loader


def load_engine(export: str | Path, backend: str = "hf", device: str = "cpu", dtype=None) -> Engine:
    """The engine `backend` names, loaded from an export directory."""
    try:
        loader = ENGINES[backend]
    except KeyError:
        raise ValueError(f"engine {backend!r} is not registered; known: {', '.join(sorted(ENGINES))}") from None
    return loader(export, device=device, dtype=dtype)


def load_placed_engine(export: str | Path, placement: Placement, backend: str = "hf") -> Engine:
    """The engine `backend` names, loaded from `export` where `placement` (mqt_llava.devices) says:
    bf16 on one GPU, or the export's own fp32 on the CPU."""
    placement.check()
    return load_engine(export, backend, placement.device, placement.dtype)


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
        from transformers import CLIPImageProcessorPil

        from mqt_llava.model.tokenizer import load_pretrained_tokenizer

        model = MQTLlavaForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device)
        settings = ImageSettings.from_processor(CLIPImageProcessorPil.from_pretrained(path))
        return cls(model, load_pretrained_tokenizer(str(path)), settings, model.config.image_aspect_ratio)

    @property
    def max_visual_tokens(self) -> int:
        return self.model.max_visual_tokens

    @property
    def min_visual_tokens(self) -> int:
        return self.model.min_visual_tokens

    @property
    def max_context(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def prompt_ids(self, request: Request) -> list[int]:
        prompt = generation_prompt(
            request.question, self.template, request.image is not None, request.history, request.system
        )
        return tokenize_prompt(prompt, self.tokenizer)

    def prompt_tokens(self, request: Request, num_visual_tokens: int) -> int:
        # The image placeholder is one token of the prompt; the LLM sees m visual tokens instead.
        return len(self.prompt_ids(request)) + (num_visual_tokens - 1 if request.image is not None else 0)

    def prepare(self, requests: list[Request]) -> PreparedBatch:
        """Tokenize and left-pad (decoder-only generation) a batch; one image per image request."""
        ids = [self.prompt_ids(r) for r in requests]
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
        top_p: float = 1.0,
        seed: int | None = None,
        streamer=None,
        cancel: threading.Event | None = None,
    ) -> list[Completion]:
        """Answers with their token counts: greedy at temperature 0, else sampled at that temperature
        with nucleus `top_p` over the whole vocabulary (top-k off), from `seed` when given (the global
        RNG is left as it was). An answer ends at EOS, at `max_new_tokens`, or as soon as one of the
        `stop` strings appears (decoding stops there; the text ends before it)."""
        batch = self.prepare(requests)
        stop = [s for s in stop or [] if s]
        device = self.model.device
        with torch.random.fork_rng(
            devices=[] if device.type == "cpu" else [device], device_type=device.type, enabled=seed is not None
        ):
            if seed is not None:
                torch.manual_seed(seed)
            output = self.decode(batch, num_visual_tokens, max_new_tokens, temperature, top_p, stop, streamer, cancel)
        completions = []
        for i, (request, tokens) in enumerate(zip(requests, output.tolist(), strict=True)):
            generated = self.answer_tokens(tokens)
            text, stopped = self.answer_text(generated, stop, finished=True)
            finish = "stop" if stopped or generated[-1:] == [self.tokenizer.eos_token_id] else "length"
            prompt = int(batch.attention_mask[i].sum()) + (num_visual_tokens - 1 if request.image is not None else 0)
            completions.append(Completion(text, prompt, len(generated), finish))
        return completions

    def decode(
        self,
        batch: PreparedBatch,
        num_visual_tokens: int,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        streamer=None,
        cancel: threading.Event | None = None,
        min_new_tokens: int = 0,
    ) -> torch.Tensor:
        """The new tokens, (batch, steps): one prefill, then one cached forward per token, with
        transformers' own sampling warpers (temperature, then top-p) and stop-string criterion.
        `generate` does the same with per-step bookkeeping this engine does not use (5-8 % of a call
        at the toy scale: benchmarks/generation_throughput.py); greedy, the two give the same tokens
        (tested). A row that ends (EOS, a stop string) is padded until every row has ended. EOS is
        suppressed for the first `min_new_tokens` (benchmarks use it for a fixed amount of work)."""
        llm, eos, pad = self.model.language_model, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        merged = self.model.merge_visual_tokens(
            batch.input_ids, batch.attention_mask, batch.pixel_values, None, num_visual_tokens, "left"
        )
        mask = merged.attention_mask
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        out = llm(
            inputs_embeds=merged.inputs_embeds,
            attention_mask=mask,
            position_ids=position,
            use_cache=True,
            logits_to_keep=1,
        )
        warpers = LogitsProcessorList()
        if temperature > 0:
            warpers.append(TemperatureLogitsWarper(temperature))
            if top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p))
        stops = StopStringCriteria(self.tokenizer, stop) if stop else None
        done = torch.zeros(len(mask), dtype=torch.bool, device=mask.device)
        tokens: list[torch.Tensor] = []
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()
            if step < min_new_tokens:
                logits[:, eos] = -torch.inf
            if temperature > 0:
                probs = torch.softmax(warpers(torch.cat(tokens, 1) if tokens else mask[:, :0], logits), dim=-1)
                token = torch.multinomial(probs, 1)
            else:
                token = logits.argmax(-1, keepdim=True)
            token = token.masked_fill(done[:, None], pad)
            tokens.append(token)
            if streamer is not None:
                streamer.put(token.cpu())
            done |= token[:, 0] == eos
            if stops is not None:
                done |= stops(torch.cat(tokens, 1), logits)
            if bool(done.all()) or step == max_new_tokens - 1 or (cancel is not None and cancel.is_set()):
                break
            mask, position = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1), position[:, -1:] + 1
            out = llm(
                input_ids=token,
                attention_mask=mask,
                position_ids=position,
                past_key_values=out.past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )
        if streamer is not None:
            streamer.end()
        return torch.cat(tokens, 1)

    def answer_tokens(self, tokens: list[int]) -> list[int]:
        """A row of generate's output up to its end: EOS included, the padding after a row that
        stopped early (a stop string) left out."""
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        if eos in tokens:
            return tokens[: tokens.index(eos) + 1]
        while tokens and tokens[-1] == pad:
            tokens = tokens[:-1]
        return tokens

    def answer_text(self, tokens: list[int], stop: list[str], finished: bool) -> tuple[str, bool]:
        """The answer's text so far and whether a stop string ended it. Until `finished`, what may
        still change is held back (trailing whitespace, which the final strip removes; a partial UTF-8
        character; the start of a stop string), so that streamed text only ever grows."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).lstrip()
        cuts = [text.index(s) for s in stop if s in text]
        if cuts:
            return text[: min(cuts)], True
        if finished:
            return text.rstrip(), False
        text = text.rstrip().rstrip("\ufffd")
        held = max((k for s in stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return text[: len(text) - held], False

    def stream(
        self, request: Request, num_visual_tokens: int, sampling: Sampling, cancel: threading.Event | None = None
    ) -> Iterator[str | Completion]:
        """Text deltas as tokens are generated (the decode loop runs in a thread), then the Completion;
        the deltas add up to its text. Closing the iterator or setting `cancel` stops the decode loop."""
        cancel = cancel or threading.Event()
        tokens = TokenQueue()
        result: dict = {}

        def run() -> None:
            try:
                result["completion"] = self.complete(
                    [request], num_visual_tokens, **sampling.kwargs(), streamer=tokens, cancel=cancel
                )[0]
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc
                tokens.end()

        worker = threading.Thread(target=run, name="mqt-stream", daemon=True)
        worker.start()
        generated: list[int] = []
        sent = ""
        stop = [s for s in sampling.stop if s]
        try:
            for token in tokens:
                generated.append(token)
                text, _ = self.answer_text(self.answer_tokens(generated), stop, finished=False)
                if len(text) > len(sent) and text.startswith(sent):
                    yield text[len(sent) :]
                    sent = text
        finally:
            cancel.set()  # a no-op once generate has returned; else (the caller went away) it stops it
        worker.join()
        if "error" in result:
            raise result["error"]
        completion = result["completion"]
        if completion.text.startswith(sent) and len(completion.text) > len(sent):
            yield completion.text[len(sent) :]
        yield completion

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


class TokenQueue:
    """Hands one sequence's new token ids (what `decode` puts, step by step) to another thread;
    iterating it yields them until generation ends."""

    def __init__(self) -> None:
        self.queue: queue.Queue[int | None] = queue.Queue()

    def put(self, value: torch.Tensor) -> None:
        for token in value.reshape(-1).tolist():
            self.queue.put(int(token))

    def end(self) -> None:
        self.queue.put(None)

    def __iter__(self) -> Iterator[int]:
        while (token := self.queue.get()) is not None:
            yield token


register_engine("hf", InferenceEngine.from_export)
