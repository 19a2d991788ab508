"""Generation throughput at m = 2 and m = M, measured side by side in one run, against the speed-up
the FLOPs predict for the same work.

    python benchmarks/generation_throughput.py                      # the quickstart's tiny export
    python benchmarks/generation_throughput.py --batch 16 --new-tokens 8 --rounds 7

The workload is LLaVA-1.5's short-answer VQA: a batch of held-out-style questions with images, each
answer exactly --new-tokens long (min = max new tokens, so both budgets do the same decoding work).
Rounds alternate m = 2 and m = M so drift in the machine's speed hits both; the figure per budget is
the median round. The FLOPs of the same `generate` call (prefill + every decode step, KV cache
included) are counted with torch.utils.flop_counter; the goal is measured / predicted >= 0.8.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from synthetic_shards import RANDOM_INIT
from torch.utils.flop_counter import FlopCounterMode

from mqt_llava.config import ModelSpec, load_config, preset_path
from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.model.builder import build_model
from mqt_llava.toy.world import SHORT_ANSWER, ask, random_scene, record_rng, render_scene

QUICKSTART_EXPORT = Path("runs/quickstart/train/tiny-stage2/export")


def engine_for(model: Path | None) -> tuple[InferenceEngine, str]:
    if model is not None or QUICKSTART_EXPORT.exists():
        path = model or QUICKSTART_EXPORT
        return InferenceEngine.from_export(path), str(path)
    torch.manual_seed(0)
    built = build_model(load_config(ModelSpec, preset_path("tiny"), RANDOM_INIT))
    return InferenceEngine.from_built(built), "tiny preset, random init, byte-level tokenizer"


def requests(batch: int) -> list[Request]:
    out = []
    for i in range(batch):
        rng = record_rng(7, "throughput", i)
        scene = random_scene(rng)
        qa = ask(scene, "count", rng)
        out.append(Request(f"{qa.question}\n{SHORT_ANSWER}", render_scene(scene)))
    return out


def generate(engine: InferenceEngine, batch, m: int, new_tokens: int) -> None:
    engine.model.generate(
        batch.input_ids, attention_mask=batch.attention_mask, pixel_values=batch.pixel_values,
        num_visual_tokens=m, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        pad_token_id=engine.tokenizer.pad_token_id, eos_token_id=engine.tokenizer.eos_token_id,
    )  # fmt: skip


def flops(engine, batch, m, new_tokens) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        generate(engine, batch, m, new_tokens)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help=f"an export; default {QUICKSTART_EXPORT} if it exists")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine, source = engine_for(args.model)
    budgets = (2, engine.max_visual_tokens)
    batch = engine.prepare(requests(args.batch))
    prompt_tokens = int(batch.attention_mask.sum(dim=1).float().mean())
    print(f"model: {source}; batch {args.batch}, ~{prompt_tokens} text tokens per prompt (+ m visual), "
          f"{args.new_tokens} new tokens each, {args.threads} threads")  # fmt: skip
    with torch.inference_mode():
        for m in budgets:  # warm-up: allocator, kernels
            generate(engine, batch, m, args.new_tokens)
        seconds = {m: [] for m in budgets}
        for _ in range(args.rounds):
            for m in budgets:
                start = time.perf_counter()
                generate(engine, batch, m, args.new_tokens)
                seconds[m].append(time.perf_counter() - start)
    predicted_flops = {m: flops(engine, batch, m, args.new_tokens) for m in budgets}
    rate = {m: args.batch / statistics.median(seconds[m]) for m in budgets}
    low, high = budgets
    measured = rate[low] / rate[high]
    predicted = predicted_flops[high] / predicted_flops[low]
    print(f"{'m':>4} {'answers/s':>10} {'GFLOPs/batch':>13}")
    for m in budgets:
        print(f"{m:>4} {rate[m]:>10.1f} {predicted_flops[m] / 1e9:>13.3f}")
    print(f"measured speed-up m={low} over m={high}: {measured:.2f}x; FLOPs-predicted: {predicted:.2f}x")
    print(f"measured / predicted: {measured / predicted:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
