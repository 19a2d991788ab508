"""The tiny preset's pretrained parts, made from the toy world: a tokenizer, a CLIP model and a causal
LM. Each is saved with `save_pretrained`, so stage 1 and 2 load them with `from_pretrained` exactly as
the llava-7b preset loads hub names.

The paper starts from parts that already know their job: CLIP's features carry what is in an image,
and Vicuna can answer a question about a scene it is told about. At toy scale neither comes for
free, so each part is trained for it and checked by a gate kept in the job's report:

- **CLIP**: contrastive image-caption training plus an auxiliary head (discarded after) that reads
  each cell's colour, shape and size from the feature layer the model uses. Gate: a fresh linear
  probe on that frozen layer reads every cell of held-out scenes (empty or not; colour, shape and
  size of occupied ones) at >= 95 %.
- **LM**: next-token training on the corpus text, plus "scene reading" conversations (a scene's
  description, then questions about it, answers supervised) and, optionally, reading drills (the same
  without the chat template, ten bare questions and answers a scene: denser supervision). Gate: >= 90 %
  on every question kind, text only, given the description of a held-out scene.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import AddedToken
from transformers import (
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from mqt_llava.data.conversation import generation_prompt, render, tokenize, tokenize_prompt
from mqt_llava.data.images import decode_image, preprocess_image
from mqt_llava.data.llava_format import iter_json_records
from mqt_llava.eval.heldout import normalise as normalise_answer
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.spec import ModelSpec
from mqt_llava.model.tokenizer import byte_level_bpe
from mqt_llava.output import Progress
from mqt_llava.toy.corpus import (
    EVAL_SCENES,
    INSTRUCT_JSON,
    PRETRAIN_JSON,
    CorpusSpec,
    scene_image,
    write_corpus,
)
from mqt_llava.toy.spec import BaseModelsSpec
from mqt_llava.toy.world import (
    CELL_ATTRIBUTES,
    CELLS,
    KINDS,
    QA,
    SCENE_PREFIX,
    Scene,
    aligned,
    ask,
    cell_names,
    drill_weights,
    prompt,
    random_scene,
    reading_drill,
    record_rng,
    render_scene,
    scene_reading_conversation,
    square_cell_labels,
)

CLIP_GATE = 0.95  # per-cell probe accuracy, every attribute
LM_GATE = 0.90  # text-only accuracy given the description, every kind


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, cells: int = CELLS) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the corpus: any text encodes, and the corpus's words become tokens.
    Cell names are added as one token each, with and without a leading space (" B3", "B3"), as BPE's
    merges would make a frequent word: byte-level pre-tokenizing splits letters from digits, and a
    tiny LM learns to look an object up by a one-token key far sooner than by two (world.py)."""
    tokenizer = byte_level_bpe(texts, vocab_size)
    names = cell_names(cells)
    tokenizer.add_tokens(
        [AddedToken(f" {name}", normalized=False) for name in names]
        + [AddedToken(name, normalized=False) for name in names]
    )
    return tokenizer


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
    check: tuple[int, Callable[[int], None]] | None = None,
) -> TrainLog:
    """A plain AdamW loop with warmup + cosine, logging step, loss, rate and ETA. `check` = (n, f):
    f(step) runs every n steps (not at the last; callers score the final model themselves), in eval
    mode; it must not draw from the training's random streams, so the losses are the same with or
    without it."""
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
            log(
                f"[{name}] step {step + 1}/{steps} loss {np.mean(losses[-every:]):.3f} "
                f"{progress.speed(' steps/s')} {progress.eta}"
            )
        if check is not None and (step + 1) % check[0] == 0 and step + 1 < steps:
            model.eval()
            check[1](step + 1)
            model.train()
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


class CellHead(torch.nn.Module):
    """Per-cell logits for each attribute in CELL_ATTRIBUTES from a tower's patch features: one linear
    map of each cell's patches (a convolution whose kernel and stride are one cell)."""

    def __init__(self, hidden: int, patches_per_side: int, cells: int) -> None:
        super().__init__()
        if patches_per_side % cells:
            raise ValueError(f"{patches_per_side} patches per side do not split into {cells} whole cells")
        self.side, step = patches_per_side, patches_per_side // cells
        self.sizes = [len(values) for values in CELL_ATTRIBUTES.values()]
        self.conv = torch.nn.Conv2d(hidden, sum(self.sizes), step, stride=step)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """(batch, patches, hidden), CLS dropped -> {attribute: (batch, classes, cells * cells)}."""
        b, _, h = features.shape
        grid = features.transpose(1, 2).reshape(b, h, self.side, self.side)
        return dict(zip(CELL_ATTRIBUTES, self.conv(grid).flatten(2).split(self.sizes, dim=1), strict=True))

    def loss(self, features: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self(features)
        return sum(F.cross_entropy(logits[name], labels[name]) for name in CELL_ATTRIBUTES)


def cell_label_tensors(scenes: Sequence[Scene]) -> dict[str, torch.Tensor]:
    """CELL_ATTRIBUTES' labels (and the `layout` mask: cells that are not padding), (n, cells * cells)."""
    per_scene = [square_cell_labels(s) for s in scenes]
    return {name: torch.tensor([labels[name] for labels in per_scene]) for name in per_scene[0]}


def patches_per_side(vision: dict) -> int:
    return vision["image_size"] // vision["patch_size"]


def seeded(function):
    """Runs `function` with the global RNG seeded by its `seed` argument, in a fork of the RNG that is
    restored after: the same seed gives the same model, and the caller's RNG is left as it was."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with torch.random.fork_rng(devices=[]):  # the toy models train on the CPU
            torch.manual_seed(bound.arguments["seed"])
            return function(*args, **kwargs)

    return wrapped


@seeded
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
    cell_labels: dict[str, torch.Tensor] | None = None,
    feature_layer: int = -2,
    cells: int = 4,
) -> tuple[CLIPModel, TrainLog]:
    """Contrastive image-caption training on uint8 images (n, 3, H, W), normalised per batch; with
    `cell_labels` (cell_label_tensors) also an auxiliary per-cell head on `feature_layer`, discarded
    after, so that the features the model will use carry every cell's contents."""
    config = CLIPConfig(
        vision_config=vision,
        text_config={
            **text,
            "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        projection_dim=text.get("hidden_size", 128),
    )
    model = CLIPModel(config)
    head = CellHead(vision["hidden_size"], patches_per_side(vision), cells) if cell_labels is not None else None
    trained = torch.nn.ModuleList([model] + ([head] if head is not None else []))
    encoded = [
        tokenizer(c, add_special_tokens=False)["input_ids"][: text.get("max_position_embeddings", 77) - 1]
        + [tokenizer.eos_token_id]
        for c in captions
    ]
    rng = np.random.default_rng(seed)

    def batch(step: int) -> dict:
        index = np.sort(rng.choice(len(captions), size=min(batch_size, len(captions)), replace=False))
        ids, mask = pad_batch([encoded[i] for i in index], tokenizer.pad_token_id)
        out = dict(pixel_values=normalise(images[index], settings), input_ids=ids, attention_mask=mask)
        if cell_labels is not None:
            out["cells"] = {name: labels[index] for name, labels in cell_labels.items()}
        return out

    def loss_of(b: dict) -> torch.Tensor:
        cells_of = b.pop("cells", None)
        out = model(**b, return_loss=True, output_hidden_states=head is not None)
        if head is None:
            return out.loss
        features = out.vision_model_output.hidden_states[feature_layer][:, 1:]
        return out.loss + head.loss(features, cells_of)

    log_ = run_steps(trained, batch, loss_of, steps, lr, log, "clip")
    return model, log_


@torch.no_grad()
def tower_features(
    clip: CLIPModel, images: torch.Tensor, settings: ImageSettings, feature_layer: int, batch: int = 256
) -> torch.Tensor:
    """The frozen features the multimodal model reads: (n, patches, hidden), CLS dropped."""
    clip.eval()
    parts = [
        clip.vision_model(normalise(images[i : i + batch], settings), output_hidden_states=True).hidden_states[
            feature_layer
        ][:, 1:]
        for i in range(0, len(images), batch)
    ]
    return torch.cat(parts)


@seeded
def probe_cells(
    train: tuple[torch.Tensor, dict[str, torch.Tensor]],
    test: tuple[torch.Tensor, dict[str, torch.Tensor]],
    cells: int,
    steps: int = 400,
    lr: float = 3e-3,
    seed: int = 0,
) -> dict[str, float]:
    """A fresh linear probe (CellHead) fitted on frozen features, scored on held-out scenes: whether
    each layout cell is empty (padding left out), and the colour, shape and size of occupied ones."""
    features, labels = train
    head = CellHead(features.shape[-1], math.isqrt(features.shape[1]), cells)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        index = torch.from_numpy(rng.choice(len(features), size=min(512, len(features)), replace=False))
        loss = head.loss(features[index], {k: v[index] for k, v in labels.items()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    features, labels = test
    with torch.no_grad():
        predicted = {name: logits.argmax(1) for name, logits in head(features).items()}
    layout, occupied = labels["layout"].bool(), labels["shape"] > 0
    empty_right = (predicted["shape"] == 0) == ~occupied
    scores = {"emptiness": float(empty_right[layout].float().mean())}
    for name in CELL_ATTRIBUTES:
        scores[name] = float((predicted[name] == labels[name])[occupied].float().mean())
    scores["cells"] = int(layout.sum())
    return scores


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


Sample = tuple[list[int], list[int]]  # input ids, labels (-100: not trained on)


def text_samples(texts: Iterable[str], tokenizer) -> list[Sample]:
    """Plain next-token samples: bos + text, every token trained on."""
    out = []
    for text in texts:
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append((ids, ids))
    return out


def conversation_samples(conversations: Iterable[list[dict]], tokenizer) -> list[Sample]:
    """Text-only conversations in the stage-2 template, only the answers trained on."""
    out = []
    for conversation in conversations:
        sample = tokenize(render(conversation, "vicuna_v1", has_image=False), tokenizer)
        out.append((sample.input_ids, sample.labels))
    return out


def drill_samples(drills: Iterable[tuple[Scene, list[QA]]], tokenizer) -> list[Sample]:
    """Reading drills (`world.reading_drill`): "Scene: <description>" on a line, then one line per
    question, "<question> <answer>"; only the answers (and their line ends) are trained on."""
    out = []
    for scene, questions in drills:
        ids = [tokenizer.bos_token_id] + tokenizer(f"{SCENE_PREFIX}{scene.describe()}\n", add_special_tokens=False)[
            "input_ids"
        ]
        labels = [-100] * len(ids)
        for qa in questions:
            question = tokenizer(qa.question, add_special_tokens=False)["input_ids"]
            answer = tokenizer(f" {qa.answer}\n", add_special_tokens=False)["input_ids"]
            ids += question + answer
            labels += [-100] * len(question) + answer
        out.append((ids, labels))
    return out


@seeded
def train_lm(
    samples: Sequence[Sample],
    tokenizer: PreTrainedTokenizerFast,
    architecture: dict,
    steps: int,
    batch_size: int = 32,
    max_tokens: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
    check: tuple[int, Callable[[LlamaForCausalLM, int], None]] | None = None,
) -> tuple[LlamaForCausalLM, TrainLog]:
    """Next-token training on (ids, labels) samples, cut at `max_tokens`; padding ignored. `check` =
    (n, f): f(model, step) every n steps, e.g. the scene-reading gate on a few scenes."""
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = LlamaConfig(**{**architecture, "vocab_size": len(tokenizer), **special})
    model = LlamaForCausalLM(config)
    cut = [(ids[:max_tokens], labels[:max_tokens]) for ids, labels in samples]
    rng = np.random.default_rng(seed)

    def batch(step: int) -> dict:
        index = rng.choice(len(cut), size=min(batch_size, len(cut)), replace=False)
        ids, mask = pad_batch([cut[i][0] for i in index], tokenizer.pad_token_id)
        labels, _ = pad_batch([cut[i][1] for i in index], -100)
        return dict(input_ids=ids, attention_mask=mask, labels=labels)

    every = None if check is None else (check[0], lambda step: check[1](model, step))
    return model, run_steps(model, batch, lambda b: model(**b).loss, steps, lr, log, "lm", check=every)


def scene_reading_questions(scenes: Sequence[Scene], seed: int = 0) -> list[tuple[str, str, str]]:
    """(kind, question with the scene's description in front, answer): one of each kind per scene."""
    out = []
    for index, scene in enumerate(scenes):
        rng = record_rng(seed, "scene-reading-gate", index)
        for kind in KINDS:
            qa = ask(scene, kind, rng)
            if qa is not None:
                out.append((kind, f"{SCENE_PREFIX}{scene.describe()}\n{prompt(qa)}", qa.answer))
    return out


@torch.no_grad()
def scene_reading_accuracy(
    lm: LlamaForCausalLM, tokenizer, scenes: Sequence[Scene], seed: int = 0, batch_size: int = 64
) -> dict[str, float]:
    """Greedy text-only answers given each scene's description: accuracy per kind and overall."""
    lm.eval()
    questions = scene_reading_questions(scenes, seed)
    prompts = [tokenize_prompt(generation_prompt(q, "vicuna_v1", False), tokenizer) for _, q, _ in questions]
    # Batches of prompts of one length: no padding, so nothing depends on how generate() treats it.
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    right, total = Counter(), Counter()
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            ids = torch.tensor([prompts[i] for i in chunk])
            out = lm.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=8,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            for i, tokens in zip(chunk, out[:, ids.shape[1] :], strict=True):
                kind, _, answer = questions[i]
                total[kind] += 1
                right[kind] += normalise_answer(tokenizer.decode(tokens, skip_special_tokens=True)) == normalise_answer(
                    answer
                )
    scores = {kind: right[kind] / total[kind] for kind in KINDS if total[kind]}
    scores["all"] = sum(right.values()) / max(1, sum(total.values()))
    return scores


def gate_line(name: str, scores: dict[str, float], threshold: float) -> tuple[bool, str]:
    shown = {k: v for k, v in scores.items() if isinstance(v, float)}
    passed = min(shown.values()) >= threshold
    figures = ", ".join(f"{k} {v:.1%}" for k, v in shown.items())
    return (
        passed,
        f"[base] gate {name} (every figure >= {threshold:.0%}): {'passed' if passed else 'FAILED'}: {figures}",
    )


BASE_MODEL_DIRS = {"tokenizer": "tokenizer", "vision_tower": "clip", "llm": "llm"}


def make_base_models(
    spec: BaseModelsSpec, model: ModelSpec, out: str | Path, log: Callable[[str], None] = print
) -> dict:
    """Corpus -> tokenizer -> CLIP (+ probe gate) -> LM (+ scene-reading gate), saved under `out`
    (tokenizer/, clip/, llm/) with the preset's architectures. Point a preset's `pretrained` fields at
    them (`preset_overrides`). Returns a report: losses, gates, seconds. A gate that fails is
    reported, not raised: the parts are still usable, and the report says what they lack."""
    if model.vision_tower.architecture is None or model.llm.architecture is None:
        raise ValueError("the model preset needs an `architecture` for both the vision tower and the LLM")
    out = Path(out).expanduser()
    targets = {name: out / directory for name, directory in BASE_MODEL_DIRS.items()}
    corpus = Path(spec.corpus).expanduser()
    if not (corpus / "corpus.json").exists():
        write_corpus(corpus, CorpusSpec(**spec.corpus_size.model_dump()), log=log)
    world = CorpusSpec(
        **{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in json.loads((corpus / "corpus.json").read_text()).items()
        }
    )
    vision = dict(model.vision_tower.architecture)
    if not aligned(vision["image_size"], vision["patch_size"], world.cells):
        raise ValueError(
            f"the vision tower's {vision['image_size']} px / {vision['patch_size']} px patches do not "
            f"split into the world's {world.cells} cells a side: pick image_size so that "
            f"image_size / patch_size is a multiple of {world.cells}"
        )
    captions_records = list(iter_json_records(str(corpus / PRETRAIN_JSON)))
    instruct_records = list(iter_json_records(str(corpus / INSTRUCT_JSON)))
    held_out = [Scene.from_dict(json.loads(line)["scene"]) for line in (corpus / EVAL_SCENES).read_text().splitlines()]

    captions = list(corpus_texts(captions_records, "plain"))
    # The LM never sees an image record's questions without its image: answering them blind is how a
    # language model learns answer priors instead of reading (what the scene-reading data teaches).
    text_only = list(corpus_texts([r for r in instruct_records if "image" not in r], "vicuna_v1"))
    instructions = list(corpus_texts(instruct_records, "vicuna_v1"))  # for the tokenizer's vocabulary only
    reading = []  # scenes of their own (not the held-out ones), described, then asked about
    for i in range(spec.lm.reading):
        rng = record_rng(spec.seed, "scene-reading", i)
        reading.append(scene_reading_conversation(random_scene(rng, world.cells, world.long_sides), rng))

    drill_weights(spec.lm.drill_weights)  # a bad weight fails here, not after the vision tower's training

    if (targets["tokenizer"] / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(targets["tokenizer"])
    else:
        texts = captions + instructions + [render(c, "vicuna_v1", False).text for c in reading[:2000]]
        tokenizer = train_tokenizer(texts, spec.vocab_size, world.cells)
        tokenizer.save_pretrained(targets["tokenizer"])
    log(f"[base] tokenizer: {len(tokenizer)} tokens -> {targets['tokenizer']}")
    report: dict = {"tokenizer": {"vocab_size": len(tokenizer)}}
    report |= part(
        targets["vision_tower"],
        log,
        lambda: make_clip(
            spec, model, world, corpus, captions_records, held_out, tokenizer, targets["vision_tower"], log
        ),
    )

    def make_llm() -> dict:  # only when the LM is not kept from an earlier run: tokenizing its data takes a while
        drills = []  # the same as `reading`, denser: bare questions and answers (world.reading_drill)
        for i in range(spec.lm.drills):
            rng = record_rng(spec.seed, "reading-drill", i)
            scene = random_scene(rng, world.cells, world.long_sides)
            drills.append((scene, reading_drill(scene, rng, spec.lm.drill_questions, spec.lm.drill_weights)))
        samples = (
            text_samples(captions + text_only, tokenizer)
            + conversation_samples(reading, tokenizer)
            + drill_samples(drills, tokenizer)
        )
        counts = {
            "caption_text": len(captions),
            "text_only_conversations": len(text_only),
            "scene_reading": len(reading),
            "reading_drills": len(drills),
        }
        return make_lm(spec, model, samples, held_out, tokenizer, targets["llm"], log) | {"lm_samples": counts}

    report |= part(targets["llm"], log, make_llm)
    return report


PART_REPORT = "base_model_report.json"


def part(directory: Path, log: Callable[[str], None], make: Callable[[], dict]) -> dict:
    """A part already made in `directory` (its report written last) is kept; else it is made."""
    path = directory / PART_REPORT
    if path.exists():
        log(f"[base] {directory.name}: kept from an earlier run ({path})")
        return json.loads(path.read_text())
    report = make()
    path.write_text(json.dumps(report, indent=2))
    return report


def make_clip(spec, model, world, corpus, captions_records, held_out, tokenizer, target, log) -> dict:
    """CLIP with its auxiliary per-cell head, the retrieval figure and the probe gate; saved to `target`."""
    vision = dict(model.vision_tower.architecture)
    settings = ImageSettings.square_of(vision["image_size"])
    aspect, layer = model.image.aspect, model.vision_tower.feature_layer
    scenes, pixels = [], []
    for i in range(min(spec.clip.max_images, len(captions_records))):
        _, scene, data, _ = scene_image(world, "pretrain", i)  # the record's own scene, regenerated
        if captions_records[i]["conversations"][1]["value"] != scene.describe():
            raise ValueError(f"{corpus / PRETRAIN_JSON} record {i} is not this world's scene {i}: remake the corpus")
        scenes.append(scene)
        pixels.append(preprocess_image(decode_image(data), settings, aspect))
    images = torch.from_numpy(np.stack(pixels))
    training = spec.clip
    clip, clip_log = train_clip(
        images,
        [s.describe() for s in scenes],
        tokenizer,
        vision,
        training.text_architecture,
        settings,
        training.steps,
        training.batch_size,
        training.lr,
        spec.seed,
        log,
        cell_label_tensors(scenes),
        layer,
        world.cells,
    )
    report: dict = {"clip": {"loss_first": clip_log.first, "loss_last": clip_log.last, "seconds": clip_log.seconds}}
    probe_scenes = held_out[: spec.clip.probe_scenes]
    if probe_scenes:
        eval_images = torch.from_numpy(
            np.stack([preprocess_image(render_scene(s), settings, aspect) for s in probe_scenes])
        )
        shown = min(256, len(probe_scenes))
        accuracy = retrieval_accuracy(
            clip, eval_images[:shown], [s.describe() for s in probe_scenes[:shown]], tokenizer, settings
        )
        report["clip_retrieval_top1"] = {"accuracy": accuracy, "candidates": shown}
        log(f"[base] clip: held-out image->caption top-1 {accuracy:.1%} among {shown}")
        fit = slice(0, min(len(scenes), 4 * len(probe_scenes)))
        probe = probe_cells(
            (tower_features(clip, images[fit], settings, layer), cell_label_tensors(scenes[fit])),
            (tower_features(clip, eval_images, settings, layer), cell_label_tensors(probe_scenes)),
            world.cells,
            seed=spec.seed,
        )
        passed, line = gate_line("clip per-cell probe", probe, CLIP_GATE)
        report["clip_probe"] = probe | {"gate": CLIP_GATE, "passed": passed, "held_out_scenes": len(probe_scenes)}
        log(line)
    clip.save_pretrained(target)
    settings.to_processor().save_pretrained(target)
    return report


def make_lm(spec, model, samples, held_out, tokenizer, target, log) -> dict:
    """The LM on caption text, text-only conversations and scene reading, with its gate; saved to `target`.
    With `lm.gate_every`, the gate is also scored on the first `lm.gate_every_scenes` held-out scenes
    every that many steps: a curve in the report and a line in the log, to see reading emerge."""
    curve: list[dict] = []

    def check(lm: LlamaForCausalLM, step: int) -> None:
        scores = scene_reading_accuracy(lm, tokenizer, held_out[: spec.lm.gate_every_scenes], spec.seed)
        curve.append({"step": step, **scores})
        figures = ", ".join(f"{k} {v:.1%}" for k, v in scores.items())
        log(f"[lm] step {step}: scene reading on {min(len(held_out), spec.lm.gate_every_scenes)} scenes: {figures}")

    every = (spec.lm.gate_every, check) if spec.lm.gate_every and spec.lm.gate_every_scenes and held_out else None
    lm, lm_log = train_lm(
        samples,
        tokenizer,
        dict(model.llm.architecture),
        spec.lm.steps,
        spec.lm.batch_size,
        spec.lm.max_tokens,
        spec.lm.lr,
        spec.seed,
        log,
        check=every,
    )
    lm.save_pretrained(target)
    report: dict = {"lm": {"loss_first": lm_log.first, "loss_last": lm_log.last, "seconds": lm_log.seconds}}
    if curve:
        report["lm_scene_reading_curve"] = curve
    reading_scenes = held_out[: spec.lm.gate_scenes]
    if reading_scenes:
        scores = scene_reading_accuracy(lm, tokenizer, reading_scenes, spec.seed)
        passed, line = gate_line("lm scene reading, text only", scores, LM_GATE)
        report["lm_scene_reading"] = scores | {
            "gate": LM_GATE,
            "passed": passed,
            "held_out_scenes": len(reading_scenes),
        }
        log(line)
    return report


def preset_overrides(out: str | Path) -> list[str]:
    """`--set` overrides that make a model preset load the parts saved under `out`."""
    out = Path(out).expanduser().resolve()
    return [f"{part}.pretrained={out / name}" for part, name in BASE_MODEL_DIRS.items()]
