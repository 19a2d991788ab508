"""The tiny preset's pretrained parts, made from the synthetic corpus: a tokenizer, a CLIP model
trained contrastively on image-caption pairs, and a causal LM trained on the corpus text. Each is
saved with `save_pretrained`, so stage 1 and 2 load them with `from_pretrained` exactly as the
llava-7b preset loads hub names.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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

from mqt_llava.config import BaseModelsSpec, ModelSpec
from mqt_llava.data.conversation import render
from mqt_llava.data.images import ImageSettings, decode_image, preprocess_image
from mqt_llava.data.llava_format import iter_json_records
from mqt_llava.model.tokenizer import byte_level_bpe
from mqt_llava.output import Progress
from mqt_llava.toy.corpus import (
    EVAL_SCENES,
    INSTRUCT_JSON,
    PRETRAIN_IMAGES,
    PRETRAIN_JSON,
    CorpusSpec,
    write_corpus,
)
from mqt_llava.toy.world import Scene, render_scene


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
    progress = Progress(steps, every=every)
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=max(1, steps // 20))
        loss = loss_of(batches(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress.update(step + 1):
            log(f"[{name}] step {step + 1}/{steps} loss {np.mean(losses[-every:]):.3f} "
                f"{progress.speed(' steps/s')} {progress.eta}")  # fmt: skip
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


def normalise(images: torch.Tensor, settings: ImageSettings) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> the float input CLIP expects."""
    mean = torch.tensor(settings.mean).view(1, 3, 1, 1)
    std = torch.tensor(settings.std).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def train_clip(
    images: torch.Tensor,
    captions: Sequence[str],
    tokenizer: PreTrainedTokenizerFast,
    vision: dict,
    text: dict,
    settings: ImageSettings,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[CLIPModel, TrainLog]:
    """Contrastive image-caption training on uint8 images (n, 3, H, W), normalised per batch."""
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
        index = np.sort(rng.choice(len(captions), size=min(batch_size, len(captions)), replace=False))
        ids, mask = pad_batch([encoded[i] for i in index], tokenizer.pad_token_id)
        return dict(pixel_values=normalise(images[index], settings), input_ids=ids, attention_mask=mask)

    return model, run_steps(model, batch, lambda b: model(**b, return_loss=True).loss, steps, lr, log, "clip")


@torch.no_grad()
def retrieval_accuracy(
    model: CLIPModel, images: torch.Tensor, captions: Sequence[str], tokenizer, settings: ImageSettings
) -> float:
    """Share of images whose own caption scores highest among `captions` (image -> text)."""
    encoded = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for c in captions]
    ids, mask = pad_batch(encoded, tokenizer.pad_token_id)
    image = F.normalize(model.get_image_features(pixel_values=normalise(images, settings)).pooler_output, dim=-1)
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
    """Next-token training on the corpus text (bos + text, as rendered; padding ignored)."""
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


BASE_MODEL_DIRS = {"tokenizer": "tokenizer", "vision_tower": "clip", "llm": "llm"}


def make_base_models(
    spec: BaseModelsSpec, model: ModelSpec, out: str | Path, log: Callable[[str], None] = print
) -> dict:
    """Corpus -> tokenizer -> CLIP -> LM, saved under `out` (tokenizer/, clip/, llm/) with the
    preset's architectures. Point a preset's `pretrained` fields at them (`preset_overrides`).
    Returns a report: losses, held-out retrieval accuracy, seconds."""
    if model.vision_tower.architecture is None or model.llm.architecture is None:
        raise ValueError("the model preset needs an `architecture` for both the vision tower and the LLM")
    out = Path(out).expanduser()
    targets = {part: out / name for part, name in BASE_MODEL_DIRS.items()}
    corpus = Path(spec.corpus).expanduser()
    if not (corpus / "corpus.json").exists():
        write_corpus(corpus, CorpusSpec(**spec.corpus_size.model_dump()), log=log)
    captions_records = list(iter_json_records(str(corpus / PRETRAIN_JSON)))
    instruct_records = list(iter_json_records(str(corpus / INSTRUCT_JSON)))
    report: dict = {}

    texts = list(corpus_texts(captions_records, "plain")) + list(corpus_texts(instruct_records, "vicuna_v1"))
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    tokenizer.save_pretrained(targets["tokenizer"])
    report["tokenizer"] = {"vocab_size": len(tokenizer)}
    log(f"[base] tokenizer: {len(tokenizer)} tokens -> {targets['tokenizer']}")

    vision = dict(model.vision_tower.architecture)
    settings = ImageSettings.square_of(vision["image_size"])
    chosen = captions_records[: spec.clip.max_images]
    aspect = model.image.aspect
    files = [(corpus / PRETRAIN_IMAGES / r["image"]).read_bytes() for r in chosen]
    images = torch.from_numpy(np.stack([preprocess_image(decode_image(data), settings, aspect) for data in files]))
    captions = [r["conversations"][1]["value"] for r in chosen]
    clip, clip_log = train_clip(images, captions, tokenizer, vision, spec.clip.text_architecture, settings,
                                spec.clip.steps, spec.clip.batch_size, spec.clip.lr, spec.seed, log)  # fmt: skip
    held_out = [json.loads(line) for line in (corpus / EVAL_SCENES).read_text().splitlines()][:256]
    if len(held_out) >= 2:
        scenes = [Scene.from_dict(s["scene"]) for s in held_out]
        eval_images = torch.from_numpy(np.stack([preprocess_image(render_scene(s), settings, aspect) for s in scenes]))
        accuracy = retrieval_accuracy(clip, eval_images, [s.describe() for s in scenes], tokenizer, settings)
        report["clip_retrieval_top1"] = {"accuracy": accuracy, "candidates": len(scenes)}
        log(f"[base] clip: held-out image->caption top-1 {accuracy:.1%} among {len(scenes)} candidates")
    clip.save_pretrained(targets["vision_tower"])
    settings.to_processor().save_pretrained(targets["vision_tower"])
    report["clip"] = {"loss_first": clip_log.first, "loss_last": clip_log.last, "seconds": clip_log.seconds}

    lm, lm_log = train_lm(texts, tokenizer, dict(model.llm.architecture), spec.lm.steps, spec.lm.batch_size,
                          spec.lm.max_tokens, spec.lm.lr, spec.seed, log)  # fmt: skip
    lm.save_pretrained(targets["llm"])
    report["lm"] = {"loss_first": lm_log.first, "loss_last": lm_log.last, "seconds": lm_log.seconds}
    return report


def preset_overrides(out: str | Path) -> list[str]:
    """`--set` overrides that make a model preset load the parts saved under `out`."""
    out = Path(out).expanduser().resolve()
    return [f"{part}.pretrained={out / name}" for part, name in BASE_MODEL_DIRS.items()]
