"""What reusing frozen vision features would save: a training step and a batch of generation with the
CLIP tower run on the batch's images (what the platform does) against the same step fed CLIP features
computed beforehand (what a feature cache would do), side by side on the same batches, in one run.

    python benchmarks/frozen_features.py                       # the toy ablation's model (96 px, M = 64)
    python benchmarks/frozen_features.py --set connector.num_queries=32 --set vision_tower.architecture.image_size=64

The vision tower is frozen in both stages, so its features of an image never change: a cache would
compute them once per image instead of once per epoch, trial and budget. The ratio this prints is the
most such a cache could gain per step (it leaves out the cost of reading the cached features, and image
decoding, which Ray Data overlaps with the step anyway). Model: the tiny architecture with the given
overrides, random init; batches: the synthetic corpus through the platform's Ray Data pipeline; stage 2's
trainable parts, micro-batches of 16 at m = M/2; generation: 4 new tokens after each training
conversation, at the given budgets. The two variants alternate batch by batch, so both see the same load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ray.data import DataContext
from synthetic_shards import RANDOM_INIT, synthetic_shards

from mqt_llava.config import load_config, preset_path
from mqt_llava.data.batches import LlavaCollate
from mqt_llava.data.datasets import read_shards, training_dataset
from mqt_llava.model.builder import build_model, image_settings_for
from mqt_llava.model.spec import ModelSpec
from mqt_llava.model.stages import configure_trainable
from mqt_llava.ray_runtime import init_ray

TOY = ["vision_tower.architecture.image_size=96", "connector.num_queries=64"]


def collect_batches(spec: ModelSpec, pad_id: int, root: Path, count: int, batch: int) -> list[dict[str, torch.Tensor]]:
    shards = synthetic_shards(spec, root, count * batch)
    dataset = training_dataset(
        read_shards(shards), spec, "vicuna_v1", image_settings_for(spec), decode_actors=1, decode_cpus=0.5
    )
    batches = dataset.iter_torch_batches(batch_size=batch, collate_fn=LlavaCollate(pad_id), drop_last=True)
    return list(batches)[:count]


class CachedFeatures:
    """model.grid_features answered from features computed once per batch (keyed by the pixels' identity)."""

    def __init__(self, model, batches: list[dict[str, torch.Tensor]]) -> None:
        self.compute = model.grid_features
        self.cache = {id(b["pixel_values"]): self.compute(b["pixel_values"]) for b in batches if "pixel_values" in b}

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        cached = self.cache.get(id(pixel_values))
        return cached if cached is not None else self.compute(pixel_values)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], help="model override (after the toy ablation's)")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16, help="the toy ablation's micro-batch")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the batches per variant")
    parser.add_argument("--budgets", default="8,64", help="budgets for the generation comparison")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks/frozen_features.json"))
    args = parser.parse_args()

    torch.set_num_threads(2)
    init_ray(num_cpus=2)
    DataContext.get_current().enable_progress_bars = False
    spec = load_config(ModelSpec, preset_path("tiny"), RANDOM_INIT + TOY + args.set)
    torch.manual_seed(0)
    built = build_model(spec)
    model, pad_id = built.model, built.tokenizer.pad_token_id
    with tempfile.TemporaryDirectory(prefix="frozen-features-") as tmp:
        batches = collect_batches(spec, pad_id, Path(tmp), args.batches, args.batch)
    configure_trainable(model, "stage2")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    cached = CachedFeatures(model, batches)
    pixels = model.grid_features

    def train_step(b, m):
        model(**b, num_visual_tokens=m).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def generate(b, m):
        model.generate(
            b["input_ids"],
            b["attention_mask"],
            b.get("pixel_values"),
            num_visual_tokens=m,
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=pad_id,
        )

    M = model.max_visual_tokens
    cases = [("train step", train_step, m, True) for m in (M // 2,)]
    cases += [("generate", generate, int(m) if m != "M" else M, False) for m in args.budgets.split(",")]
    results = []
    for label, fn, m, training in cases:
        model.train(training)
        seconds = {"tower": [], "cached": []}
        for _ in range(args.rounds):
            for b in batches:
                for variant, features in (("tower", pixels), ("cached", cached)):
                    model.grid_features = features
                    with torch.set_grad_enabled(training):
                        seconds[variant].append(timed(fn, b, m))
        model.grid_features = pixels
        tower, cache = statistics.median(seconds["tower"]), statistics.median(seconds["cached"])
        results.append(
            dict(
                case=label,
                m=m,
                tower_ms=1000 * tower,
                cached_ms=1000 * cache,
                speedup=tower / cache,
                tower_share=1 - cache / tower,
            )
        )
        share = 100 * (1 - cache / tower)
        print(
            f"{label:11} m={m:<3} tower {1000 * tower:7.1f} ms  cached {1000 * cache:7.1f} ms  "
            f"-> {tower / cache:.2f}x ({share:.0f}% of the time is the tower)",
            flush=True,
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(args).items()}, results=results), indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
