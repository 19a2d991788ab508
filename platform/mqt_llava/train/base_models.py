"""The tiny preset's pretrained parts, made from the synthetic corpus: a tokenizer, a CLIP model
trained contrastively on image-caption pairs, and a causal LM trained on the corpus text. Each is
saved with `save_pretrained`, so stage 1 and 2 load them with `from_pretrained` exactly as the
llava-7b preset loads hub names.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    CLIPConfig,
    CLIPModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from mqt_llava.data.conversation import render
from mqt_llava.model.tokenizer import byte_level_bpe


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the corpus: any text encodes, and the corpus's words become tokens."""
    return byte_level_bpe(texts, vocab_size)


def corpus_texts(records: Iterable[dict], template: str) -> Iterable[str]:
    """The text a model will see: each record rendered with its template."""
    for record in records:
        yield render(record["conversations"], template, "image" in record).text


@dataclass
class TrainLog:
    losses: list[float]
    seconds: float

    @property
    def first(self) -> float:
        return float(np.mean(self.losses[: max(1, len(self.losses) // 10)]))

    @property
    def last(self) -> float:
        return float(np.mean(self.losses[-max(1, len(self.losses) // 10) :]))


def cosine_lr(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def run_steps(
    model: torch.nn.Module,
    batches: Callable[[int], dict],
    loss_of: Callable[[dict], torch.Tensor],
    steps: int,
    lr: float,
    log: Callable[[str], None],
    name: str,
    every: int = 50,
) -> TrainLog:
    """A plain AdamW loop with warmup + cosine, logging step, loss, rate and ETA."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses, start = [], time.monotonic()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=max(1, steps // 20))
        loss = loss_of(batches(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == steps:
            elapsed = time.monotonic() - start
            rate = (step + 1) / elapsed
            log(f"[{name}] step {step + 1}/{steps} loss {np.mean(losses[-every:]):.3f} "
                f"{rate:.1f} steps/s ETA {(steps - step - 1) / rate:.0f}s")  # fmt: skip
    model.eval()
    return TrainLog(losses, time.monotonic() - start)


def pad_batch(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def train_clip(
    pixels: torch.Tensor,
    captions: Sequence[str],
    tokenizer: PreTrainedTokenizerFast,
    vision: dict,
    text: dict,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[CLIPModel, TrainLog]:
    """Contrastive image-caption training. `pixels` are normalised floats (n, 3, H, W)."""
    torch.manual_seed(seed)
    config = CLIPConfig(
        vision_config=vision,
        text_config={**text, "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id},
        projection_dim=text.get("hidden_size", 128),
    )  # fmt: skip
    model = CLIPModel(config)
    encoded = [tokenizer(c, add_special_tokens=False)["input_ids"][: text.get("max_position_embeddings", 77) - 1]
               + [tokenizer.eos_token_id] for c in captions]  # fmt: skip
    rng = np.random.default_rng(seed)

    def batch(step: int) -> dict:
        index = rng.choice(len(captions), size=min(batch_size, len(captions)), replace=False)
        ids, mask = pad_batch([encoded[i] for i in index], tokenizer.pad_token_id)
        return dict(pixel_values=pixels[index], input_ids=ids, attention_mask=mask)

    return model, run_steps(model, batch, lambda b: model(**b, return_loss=True).loss, steps, lr, log, "clip")


@torch.no_grad()
def retrieval_accuracy(model: CLIPModel, pixels: torch.Tensor, captions: Sequence[str], tokenizer) -> float:
    """Share of images whose own caption scores highest among `captions` (image -> text)."""
    encoded = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for c in captions]
    ids, mask = pad_batch(encoded, tokenizer.pad_token_id)
    image = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    text = F.normalize(model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output, dim=-1)
    return float((image @ text.T).argmax(dim=1).eq(torch.arange(len(captions))).float().mean())


def train_lm(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerFast,
    architecture: dict,
    steps: int,
    batch_size: int = 32,
    max_tokens: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[LlamaForCausalLM, TrainLog]:
    """Next-token training on the corpus text (bos + text + eos, padding ignored)."""
    torch.manual_seed(seed)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}  # fmt: skip
    config = LlamaConfig(**{**architecture, "vocab_size": len(tokenizer), **special})
    model = LlamaForCausalLM(config)
    encoded = [([tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"])[:max_tokens]
               for t in texts]  # fmt: skip
    rng = np.random.default_rng(seed)

    def batch(step: int) -> dict:
        index = rng.choice(len(encoded), size=min(batch_size, len(encoded)), replace=False)
        ids, mask = pad_batch([encoded[i] for i in index], tokenizer.pad_token_id)
        return dict(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))

    return model, run_steps(model, batch, lambda b: model(**b).loss, steps, lr, log, "lm")
