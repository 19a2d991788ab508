"""Quickstart: the tiny pipeline end to end, one step after another.

    python jobs/quickstart.py                 # embedded local Ray, tiny preset
    ray job submit -- python jobs/quickstart.py   # the same on a cluster

Steps so far:
  1. data    write a small synthetic corpus in LLaVA's formats, convert both sets to Parquet shards
             (rejects counted), and stream a few training batches through Ray Data.
  2. model   build the preset's MQT-LLaVA; for each budget m show the visual tokens, the prefill
             latency and a greedy answer about one synthetic image; save an export.
Later issues add: base models -> stage 1 -> stage 2 -> evaluation -> serving.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch
from ray.data import DataContext

from mqt_llava.config import ModelSpec, load_config, preset_path
from mqt_llava.data.datasets import LlavaCollate, read_shards, training_dataset
from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.data.synthetic import random_scene, render_scene
from mqt_llava.data.synthetic_corpus import (
    INSTRUCT_JSON,
    PRETRAIN_IMAGES,
    PRETRAIN_JSON,
    CorpusSpec,
    write_corpus,
)
from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.model.builder import build_model, image_settings_for, load_tokenizer, save_export
from mqt_llava.model.stages import format_parameter_report, parameter_report
from mqt_llava.ray_runtime import init_ray

QUESTION = "What shapes are in the image, and where are they?"


@dataclass
class Context:
    spec: ModelSpec
    run_dir: Path
    budgets: list[int]
    results: dict = field(default_factory=dict)


@ray.remote(num_cpus=1)
def probe_budgets(spec: ModelSpec, budgets: list[int], export_dir: str, repeats: int = 5) -> dict:
    """Runs on a Ray worker: build the model and time one prefill per budget."""
    torch.manual_seed(0)
    built = build_model(spec)
    save_export(built, export_dir)
    engine = InferenceEngine.from_built(built)
    scene_seed, image_size = 0, (160, 120)  # not square: exercises padding
    scene = random_scene(scene_seed)
    request = Request(QUESTION, render_scene(scene, *image_size))
    batch = engine.prepare([request])  # tokenized and preprocessed once: the timing is the model's
    rows = []
    for m in budgets:
        visual = built.model.encode_images(batch.pixel_values, m).shape[1]
        engine.prefill(batch, m)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            engine.prefill(batch, m)
            times.append(time.perf_counter() - start)
        prompt_tokens = int(batch.attention_mask.sum()) - 1 + visual
        answer = engine.generate([request], m, max_new_tokens=16)[0]
        rows.append(
            dict(
                m=m,
                visual_tokens=visual,
                prompt_tokens=prompt_tokens,
                prefill_ms=1000 * sorted(times)[len(times) // 2],
                answer=answer,
            )
        )
    return dict(
        question=QUESTION,
        scene_seed=scene_seed,
        image_size=image_size,
        scene=scene.describe(),
        parameters=format_parameter_report(parameter_report(built.model)),
        rows=rows,
    )


def step_data(ctx: Context) -> None:
    corpus = ctx.run_dir / "data"
    if not (corpus / "corpus.json").exists():
        write_corpus(corpus, CorpusSpec(seed=0, num_pretrain=400, num_instruct=400, num_eval=100))
    sets = {
        "558k": (corpus / PRETRAIN_JSON, corpus / PRETRAIN_IMAGES, "plain"),
        "665k": (corpus / INSTRUCT_JSON, corpus, "vicuna_v1"),
    }
    summary = {}
    for name, (json_path, image_root, template) in sets.items():
        rules = RecordRules(template, ctx.spec.max_length, ctx.spec.mqt.num_queries)
        job = PrepareJob(str(json_path), str(image_root), str(ctx.run_dir / "shards" / name), ctx.spec.tokenizer, rules)
        report = prepare(job).as_dict()
        summary[name] = report
        print(f"{name}: read {report['read']}, written {report['written']}, rejected {report['rejected_by_reason']}")

    pad = load_tokenizer(ctx.spec.tokenizer).pad_token_id
    dataset = training_dataset(
        read_shards(str(ctx.run_dir / "shards" / "665k")), ctx.spec, "vicuna_v1", image_settings_for(ctx.spec),
        decode_actors=1, decode_cpus=0.5,
    )  # fmt: skip
    batches = dataset.iter_torch_batches(batch_size=8, collate_fn=LlavaCollate(pad), local_shuffle_buffer_size=64)
    for i, batch in zip(range(3), batches, strict=False):
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in batch.items())
        print(f"batch {i}: {shapes}")
    ctx.results["data"] = summary


def step_model(ctx: Context) -> None:
    export_dir = ctx.run_dir / "export"
    result = ray.get(probe_budgets.remote(ctx.spec, ctx.budgets, str(export_dir)))
    print(result["parameters"])
    print(f"\nimage: {result['scene']}\nquestion: {QUESTION}\n")
    print(f"{'m':>4} {'visual':>7} {'prompt':>7} {'prefill ms':>11}  greedy answer (untrained weights)")
    for r in result["rows"]:
        cells = f"{r['m']:>4} {r['visual_tokens']:>7} {r['prompt_tokens']:>7} {r['prefill_ms']:>11.1f}"
        print(f"{cells}  {r['answer']!r}")
    print(f"\nexport: {export_dir}")
    ctx.results["model"] = result


STEPS = [("data", step_data), ("model", step_model)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--budgets", default="1,2,4,8,16,M", help="comma-separated; M = the preset's maximum")
    args = parser.parse_args()

    spec = load_config(ModelSpec, preset_path(args.preset, "model"), args.overrides)
    budgets = [spec.mqt.num_queries if b.strip() == "M" else int(b) for b in args.budgets.split(",")]
    for m in budgets:
        if not 1 <= m <= spec.mqt.num_queries:
            parser.error(f"--budgets: {m} is outside 1..{spec.mqt.num_queries} (M)")
    ctx = Context(spec=spec, run_dir=args.run_dir, budgets=budgets)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)

    where = init_ray()
    DataContext.get_current().enable_progress_bars = False  # progress comes as periodic lines
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"Ray: {where} ({cpus:.0f} CPUs); preset {spec.name}; run dir {ctx.run_dir}")
    for i, (name, step) in enumerate(STEPS, 1):
        print(f"\n=== step {i}/{len(STEPS)}: {name} ===")
        start = time.perf_counter()
        step(ctx)
        print(f"--- {name} done in {time.perf_counter() - start:.1f}s")
    summary = ctx.run_dir / "summary.json"
    summary.write_text(json.dumps(ctx.results, indent=2))
    print(f"\nsummary: {summary}")


if __name__ == "__main__":
    main()
