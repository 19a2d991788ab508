"""The bridge probe: how fast can the vision-to-language bridge learn on the pilot's world, outside Ray?

The pilot's stages train through Ray Data and DeepSpeed at about 1.3 s a step; this probe trains the
same parts on the same records with the frozen vision tower's grid features computed once, so a
question such as "does a longer stage 1 help" or "is the connector the bottleneck" costs minutes.
It is an experiment record (docs/ablation/tiny-ablation/pilot/README.md, "The bridge, measured"),
not a platform path: the platform's stages are what the pilot and the grid run.

  caption  stage 1 alone: only the connector trains, on the 558K-like captions (plain template);
           scored by greedy captions of held-out scenes, an object counted right when its cell's
           entry ("C2 small red circle") is exactly the truth.
  qa       stage 2: connector and LLM train on the 665K-like conversations (vicuna_v1) at m = M;
           scored on the toy world's held-out questions (toy.heldout) of the first `--scenes` scenes, by kind.

Connectors: `export` (the pilot's stage-1 MQT), `fresh` (a new MQT), `cell-pool` (an oracle bridge
with no attention to learn: one token per toy cell, its 3 x 3 patches mean-pooled, then a linear
projection), `cell-pool-named` (the same, each token plus the LLM's embedding of its cell's name, the projection
starting at zero).
Example, from the repository root after the pilot's runs/toy exists:

    python docs/ablation/tiny-ablation/pilot/bridge_probe.py qa --connector cell-pool --steps 500
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessorPil

from mqt_llava.data.conversation import render, tokenize
from mqt_llava.data.images import preprocess_image
from mqt_llava.eval.heldout import answer
from mqt_llava.inference import InferenceEngine
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.modeling import IGNORE_INDEX, MQTLlavaForConditionalGeneration
from mqt_llava.toy import heldout
from mqt_llava.toy.world import Scene, cell_name


class CellPool(torch.nn.Module):
    """One token per cell of a cells x cells world whose cells are `patches` x `patches` grid
    features each: nothing to learn about where to look, only a projection."""

    def __init__(self, vision_width: int, llm_width: int, cells: int, num_queries: int, names=None) -> None:
        super().__init__()
        self.cells, self.max_tokens, self.num_queries = cells, num_queries, num_queries
        self.proj = torch.nn.Linear(vision_width, llm_width)
        self.names = names  # (cells * cells, llm_width): each token also says which cell it is, in words
        if names is not None:  # a token starts as its cell's name and learns to add what the cell holds
            torch.nn.init.zeros_(self.proj.weight)
            torch.nn.init.zeros_(self.proj.bias)

    def forward(self, grid: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
        batch, positions, width = grid.shape
        side = math.isqrt(positions)
        square = grid.reshape(batch, side, side, width).permute(0, 3, 1, 2)
        pooled = torch.nn.functional.avg_pool2d(square, side // self.cells).flatten(2).transpose(1, 2)
        tokens = self.proj(pooled)
        return tokens if self.names is None else tokens + self.names


def load(run_dir: Path, connector: str, keys: str | None, query_std: float | None, qk_std: float | None):
    export = run_dir / "train/tiny-stage1/export"
    model = MQTLlavaForConditionalGeneration.from_pretrained(export)
    tokenizer = AutoTokenizer.from_pretrained(export)
    settings = ImageSettings.from_processor(CLIPImageProcessorPil.from_pretrained(export))
    mqt = model.connector
    if connector.startswith("cell-pool"):
        names = None
        if connector == "cell-pool-named":  # the LLM's own embedding of each cell's name ("C2"), row by row
            ids = [tokenizer(cell_name(r, c), add_special_tokens=False).input_ids for r in range(4) for c in range(4)]
            if any(len(i) != 1 for i in ids):
                raise ValueError("cell-pool-named needs every cell name to be one token")
            names = model.language_model.get_input_embeddings().weight[[i[0] for i in ids]].detach().clone()
        pool = CellPool(mqt.width, model.language_model.config.hidden_size, 4, mqt.num_queries, names)
        model.connector = pool
        model.encode_images = lambda pixels, m=None: pool(model.grid_features(pixels))
    else:
        if connector == "fresh":
            mqt.reset_parameters()
        if keys:
            mqt.keys = keys
        if query_std:
            torch.nn.init.trunc_normal_(mqt.queries, std=query_std)
        if qk_std:
            for linear in (mqt.q_proj, mqt.k_proj):
                torch.nn.init.normal_(linear.weight, std=qk_std)
    return model, tokenizer, settings


def grid_cache(model, tokenizer, settings, corpus: Path, records: list[dict], template: str, image_root: Path,
               cache: Path):  # fmt: skip
    """Grid features (fp16) and tokenized conversations of every image record, computed once."""
    if cache.exists():
        return torch.load(cache, weights_only=False)
    features, samples = [], []
    for i in range(0, len(records), 64):
        chunk = records[i : i + 64]
        images = [Image.open(image_root / r["image"]).convert("RGB") for r in chunk]
        pixels = torch.from_numpy(np.stack([preprocess_image(im, settings, "pad") for im in images]))
        with torch.no_grad():
            features.append(model.grid_features(pixels).half())
        samples += [tokenize(render(r["conversations"], template, True), tokenizer) for r in chunk]
    result = (torch.cat(features), samples)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result, cache)
    return result


def batch_inputs(model, samples, visual: torch.Tensor):
    """Embeddings, mask and labels with each sample's image placeholder replaced by its visual tokens."""
    embed = model.language_model.get_input_embeddings()
    m = visual.shape[1]
    length = max(len(s.input_ids) for s in samples) - 1 + m
    inputs = torch.zeros(len(samples), length, embed.embedding_dim)
    labels = torch.full((len(samples), length), IGNORE_INDEX)
    mask = torch.zeros(len(samples), length, dtype=torch.long)
    for j, s in enumerate(samples):
        ids, lab = torch.tensor(s.input_ids), torch.tensor(s.labels)
        p = int((ids == model.config.image_token_index).nonzero()[0])
        e = torch.cat([embed(ids[:p]), visual[j], embed(ids[p + 1 :])])
        ll = torch.cat([lab[:p], torch.full((m,), IGNORE_INDEX), lab[p + 1 :]])
        inputs[j, : len(e)], labels[j, : len(e)], mask[j, : len(e)] = e, ll, 1
    return inputs, mask, labels


def caption_score(model, tokenizer, settings, corpus: Path, scenes: int) -> float:
    """Share of held-out objects whose entry the greedy caption (at m = M) gets exactly right."""
    records = [json.loads(line) for line in (corpus / "eval/scenes.jsonl").read_text().splitlines()[:scenes]]
    images = [Image.open(corpus / r["image"]).convert("RGB") for r in records]
    pixels = torch.from_numpy(np.stack([preprocess_image(im, settings, "pad") for im in images]))
    newline = tokenizer("\n", add_special_tokens=False).input_ids[-1]
    with torch.no_grad():
        visual = model.encode_images(pixels)
        bos = model.language_model.get_input_embeddings()(torch.full((len(records), 1), tokenizer.bos_token_id))
        inputs = torch.cat([bos, visual], dim=1)
        out = model.language_model.generate(inputs_embeds=inputs, attention_mask=torch.ones(inputs.shape[:2]).long(),
                                            max_new_tokens=40, do_sample=False, eos_token_id=newline,
                                            pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    right = total = 0
    for record, tokens in zip(records, out.tolist(), strict=True):
        caption = tokenizer.decode(tokens, skip_special_tokens=True).split("\n")[0].strip().rstrip(".")
        entries = {e.split(" ")[0]: e for e in re.split(r",\s*", caption) if e}
        for o in Scene.from_dict(record["scene"]).objects:
            cell = cell_name(o.row, o.col)
            total += 1
            right += entries.get(cell) == f"{cell} {o.size} {o.colour} {o.shape}"
    return right / total


def qa_score(model, tokenizer, settings, questions) -> dict[str, float]:
    engine = InferenceEngine(model, tokenizer, settings, "pad")
    answers = answer(engine, questions, model.max_visual_tokens, log=lambda _: None)
    return {kind: round(100 * i.estimate, 1) for kind, i in answers.intervals(heldout.QUESTIONS.kinds).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=["caption", "qa"])
    parser.add_argument("--connector", choices=["export", "fresh", "cell-pool", "cell-pool-named"], default="export")
    parser.add_argument("--keys", choices=["content_and_position", "position_only"], default=None)
    parser.add_argument("--query-std", type=float, default=None, help="re-initialise the MQT's queries")
    parser.add_argument("--qk-std", type=float, default=None, help="re-initialise its query and key projections")
    parser.add_argument("--lr", type=float, default=None, help="connector (default: 1e-3 caption, 5e-4 qa)")
    parser.add_argument("--llm-lr", type=float, default=None, help="qa: the LLM's (default: --lr)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--scenes", type=int, default=100, help="held-out scenes scored")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/toy"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    torch.set_num_threads(2)

    corpus = args.run_dir / "data"
    model, tokenizer, settings = load(args.run_dir, args.connector, args.keys, args.query_std, args.qk_std)
    caption = args.task == "caption"
    source = "blip_laion_cc_sbu_558k.json" if caption else "llava_v1_5_mix665k.json"
    records = [r for r in json.loads((corpus / source).read_text()) if "image" in r]
    image_root = corpus / "LLaVA-Pretrain/images" if caption else corpus
    features, samples = grid_cache(model, tokenizer, settings, corpus, records, "plain" if caption else "vicuna_v1",
                                   image_root, args.run_dir / f"bridge_probe/{args.task}.pt")  # fmt: skip
    questions = None if caption else heldout.heldout_questions(corpus, limit=args.scenes)

    for p in model.parameters():
        p.requires_grad_(False)
    lr = args.lr or (1e-3 if caption else 5e-4)
    groups = [{"params": list(model.connector.parameters()), "lr": lr}]
    if not caption:
        groups.append({"params": list(model.language_model.parameters()), "lr": args.llm_lr or lr})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    warmup = max(1, int(0.03 * args.steps))  # the stages' schedule: 3 % warmup, then cosine to 0
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)),
    )

    def score():
        model.eval()
        result = caption_score(model, tokenizer, settings, corpus, args.scenes) if caption else \
            qa_score(model, tokenizer, settings, questions)  # fmt: skip
        model.train()
        return result

    order, position, losses, started = list(range(len(samples))), len(samples), [], time.time()
    report = {"task": args.task, "connector": args.connector, "keys": args.keys, "lr": lr, "llm_lr": args.llm_lr,
              "query_std": args.query_std, "qk_std": args.qk_std, "steps": args.steps}  # fmt: skip
    print(json.dumps(report | {"step": 0, "score": score()}), flush=True)
    model.train()
    for step in range(1, args.steps + 1):
        if position + 32 > len(order):
            rng.shuffle(order)
            position = 0
        chosen = order[position : position + 32]
        position += 32
        visual = model.connector(features[chosen].float(), model.max_visual_tokens)
        inputs, mask, labels = batch_inputs(model, [samples[i] for i in chosen], visual)
        loss = model.language_model(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            recent = losses[-args.eval_every :]
            print(json.dumps(report | {"step": step, "loss": round(sum(recent) / len(recent), 3), "score": score(),
                                       "seconds": round(time.time() - started)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
