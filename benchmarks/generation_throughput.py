"""Generation throughput at m = 2 and m = M, measured side by side in one run: against the speed-up
the FLOPs predict for the same work, and against the physical limit on this machine, a bare loop
doing the same arithmetic (one prefill, then one cached forward per token, argmax, nothing else).

    python benchmarks/generation_throughput.py                      # the quickstart's tiny export
    python benchmarks/generation_throughput.py --model path/to/export --batch 16 --new-tokens 8 --rounds 7
    python benchmarks/generation_throughput.py --random-init        # the tiny preset, random weights

The workload is LLaVA-1.5's short-answer VQA: a batch of held-out-style questions with images, each
answer exactly --new-tokens long (min = max new tokens, so both budgets do the same decoding work).
Rounds alternate m = 2 and m = M, and within each the engine's decode loop (what the platform runs),
transformers' `generate` and the bare loop, so drift in the machine's speed hits all of them; the
figure per variant is the median round, with the range over rounds of its ratio to the bare loop in
the same round. The variants' tokens are compared (greedy: they must be equal). The FLOPs of the
same `generate` call (prefill + every decode step, KV cache included) are counted with
torch.utils.flop_counter; the goals: measured / predicted speed-up >= 0.8, engine / bare >= 0.95.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from synthetic_shards import RANDOM_INIT
from torch.utils.flop_counter import FlopCounterMode

from mqt_llava.config import load_config, preset_path
from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.model.builder import build_model
from mqt_llava.model.spec import ModelSpec
from mqt_llava.toy.world import SHORT_ANSWER, ask, random_scene, record_rng, render_scene

QUICKSTART_EXPORT = Path("runs/quickstart/train/tiny-stage2/export")


def engine_for(model: Path | None, random_init: bool) -> tuple[InferenceEngine, str]:
    """The export asked for; the quickstart's by default; random weights only when asked (a silent
    fallback would describe a different model under the same command)."""
    if random_init:
        torch.manual_seed(0)
        built = build_model(load_config(ModelSpec, preset_path("tiny"), RANDOM_INIT))
        return InferenceEngine.from_built(built), "tiny preset, random init, byte-level tokenizer"
    path = model or QUICKSTART_EXPORT
    if not (path / "config.json").exists():
        raise SystemExit(f"no export at {path}: run python jobs/quickstart.py, pass --model, or --random-init")
    return InferenceEngine.from_export(path), str(path)


def requests(batch: int) -> list[Request]:
    out = []
    for i in range(batch):
        rng = record_rng(7, "throughput", i)
        scene = random_scene(rng)
        qa = ask(scene, "count", rng)
        out.append(Request(f"{qa.question}\n{SHORT_ANSWER}", render_scene(scene)))
    return out


def generate(engine: InferenceEngine, batch, m: int, new_tokens: int) -> torch.Tensor:
    return engine.model.generate(
        batch.input_ids,
        attention_mask=batch.attention_mask,
        pixel_values=batch.pixel_values,
        num_visual_tokens=m,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=engine.tokenizer.pad_token_id,
        eos_token_id=engine.tokenizer.eos_token_id,
    )


def engine_decode(engine: InferenceEngine, batch, m: int, new_tokens: int) -> torch.Tensor:
    """What the platform's `complete` runs after preparing the batch."""
    return engine.decode(batch, m, new_tokens, min_new_tokens=new_tokens)


def bare_loop(engine: InferenceEngine, batch, m: int, new_tokens: int) -> torch.Tensor:
    """The same greedy decode with nothing but the arithmetic: merge the visual tokens, one prefill
    (logits of the last position only), then one cached forward per token; EOS suppressed, as
    min_new_tokens does in `generate`, so both decode the same tokens."""
    merged = engine.model.merge_visual_tokens(
        batch.input_ids, batch.attention_mask, batch.pixel_values, None, m, "left"
    )
    llm, eos = engine.model.language_model, engine.tokenizer.eos_token_id
    mask = merged.attention_mask
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    out = llm(
        inputs_embeds=merged.inputs_embeds, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1
    )
    tokens, last = [], position[:, -1:]
    for step in range(new_tokens):
        logits = out.logits[:, -1]
        logits[:, eos] = -torch.inf
        token = logits.argmax(-1, keepdim=True)
        tokens.append(token)
        if step == new_tokens - 1:
            break
        mask, last = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1), last + 1
        out = llm(
            input_ids=token,
            attention_mask=mask,
            position_ids=last,
            past_key_values=out.past_key_values,
            use_cache=True,
            logits_to_keep=1,
        )
    return torch.cat(tokens, dim=1)


def flops(engine, batch, m, new_tokens) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        generate(engine, batch, m, new_tokens)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help=f"an export (default {QUICKSTART_EXPORT})")
    parser.add_argument("--random-init", action="store_true", help="the tiny preset with random weights instead")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine, source = engine_for(args.model, args.random_init)
    budgets = (2, engine.max_visual_tokens)
    variants = {"engine": engine_decode, "hf generate": generate, "bare": bare_loop}
    batch = engine.prepare(requests(args.batch))
    prompt_tokens = int(batch.attention_mask.sum(dim=1).float().mean())
    print(
        f"model: {source}; batch {args.batch}, ~{prompt_tokens} text tokens per prompt (+ m visual), "
        f"{args.new_tokens} new tokens each, {args.threads} threads, {args.rounds} rounds"
    )
    seconds = {(m, v): [] for m in budgets for v in variants}
    with torch.inference_mode():
        for m in budgets:  # warm-up (allocator, kernels) and the check that all decode the same tokens
            outputs = {name: run(engine, batch, m, args.new_tokens) for name, run in variants.items()}
            if not all(torch.equal(out, outputs["bare"]) for out in outputs.values()):
                raise SystemExit(f"m = {m}: the variants decoded different tokens")
        for r in range(args.rounds):
            for m in budgets:
                for name in variants if r % 2 == 0 else reversed(variants):
                    start = time.perf_counter()
                    variants[name](engine, batch, m, args.new_tokens)
                    seconds[(m, name)].append(time.perf_counter() - start)
    print(f"tokens: {', '.join(variants)} decode the same tokens at every budget (checked)")
    predicted_flops = {m: flops(engine, batch, m, args.new_tokens) for m in budgets}
    rate = {key: args.batch / statistics.median(times) for key, times in seconds.items()}
    print(
        f"{'m':>4} {'GFLOPs/batch':>13} {'variant':>12} {'answers/s':>10} {'of bare (median, range over rounds)':>36}"
    )
    for m in budgets:
        for name in variants:
            ratios = [b / t for t, b in zip(seconds[(m, name)], seconds[(m, "bare")], strict=True)]
            print(
                f"{m:>4} {predicted_flops[m] / 1e9:>13.3f} {name:>12} {rate[(m, name)]:>10.1f} "
                f"{statistics.median(ratios):>17.2f} [{min(ratios):.2f}, {max(ratios):.2f}]"
            )
    print("goal: engine >= 0.95 of bare")
    low, high = budgets
    measured = rate[(low, "engine")] / rate[(high, "engine")]
    predicted = predicted_flops[high] / predicted_flops[low]
    print(f"measured speed-up m={low} over m={high} (engine): {measured:.2f}x; FLOPs-predicted: {predicted:.2f}x")
    print(f"measured / predicted: {measured / predicted:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
