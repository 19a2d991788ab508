"""Quickstart: the tiny pipeline end to end, one step after another, on one machine.

    python jobs/quickstart.py                     # embedded local Ray, tiny preset, ~15 min on 2 cores
    ray job submit -- python jobs/quickstart.py   # the same on a cluster

Steps (mqt_llava.toy.quickstart):
  1. data         a synthetic corpus in LLaVA's formats (558K-like captions, 665K-like instructions,
                  held-out evaluation scenes), and benchmark files in the official formats (POPE,
                  VQAv2, GQA, ScienceQA, MME, MMBench) made from the held-out scenes
  2. base models  the tiny preset's pretrained parts from that corpus: tokenizer, CLIP, Llama LM
  3. shards       both sets converted to Parquet shards (rejects counted)
  4. stage 1      the MQT alone, plain template, all M tokens (Ray Train + DeepSpeed ZeRO-2)
  5. stage 2      MQT + LLM, vicuna_v1, m drawn each step (ZeRO-2), from stage 1's export
  6. evaluate     held-out exact match at each budget next to the majority-answer baseline
  7. benchmarks   the budget sweep over the benchmark files (jobs/evaluate.py's library)
  8. serve        serve_apps/config.yaml's application on the stage-2 export, on loopback: one chat
                  completion per model id (each tier and `auto`) over HTTP, and a refused bad request
  9. ablation     a two-trial Ray Tune grid (linear vs log schedule, one shared stage 1), with MLflow
                  runs and ablation_report.md (the toy reproduction of Table 2 is tiny/ablation)

Every step skips what an earlier run of the same --run-dir finished.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ray

from mqt_llava.config import ModelSpec, load_config, preset_path
from mqt_llava.model.budgets import BudgetError, parse_budgets
from mqt_llava.model.builder import max_visual_tokens
from mqt_llava.output import configure_output
from mqt_llava.ray_runtime import init_ray
from mqt_llava.toy.quickstart import STEPS, Context, counts, world_field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--corpus", type=counts, default=(6000, 6000, 300), metavar="PRETRAIN,INSTRUCT,EVAL",
                        help="synthetic records per set")  # fmt: skip
    parser.add_argument("--budgets", default="2,M", help="evaluation budgets, comma-separated; M = the maximum")
    parser.add_argument("--eval-scenes", type=int, default=300, help="held-out scenes to ask about")
    parser.add_argument("--sweep-budgets", default="2,4,8,16,M", help="the benchmark sweep's budgets")
    parser.add_argument("--sweep-limit", type=int, default=600,
                        help="about N questions per benchmark in the sweep (a seeded random draw)")  # fmt: skip
    parser.add_argument("--world", type=world_field, action="append", default=[], metavar="KEY=N",
                        help="the synthetic world: grid (an N x N layout, 3) or max_objects (4)")  # fmt: skip
    parser.add_argument("--until", choices=[name for name, _ in STEPS], default=STEPS[-1][0],
                        help="stop after this step ('shards': what an ablation trains on)")  # fmt: skip
    parser.add_argument("--serve-config", type=Path, default=Path("serve_apps/config.yaml"),
                        help="the Serve config whose application step 8 deploys")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="keep Ray's, Ray Train's and the libraries' own logs")
    for flag, dest, what in (
        ("--model-set", "model_overrides", "the model preset"),
        ("--base-set", "base_overrides", "base_models.yaml"),
        ("--stage1-set", "stage1_overrides", "stage1.yaml"),
        ("--stage2-set", "stage2_overrides", "stage2.yaml"),
    ):
        parser.add_argument(flag, dest=dest, action="append", default=[], metavar="KEY=VALUE",
                            help=f"override a field of {what}")  # fmt: skip
    args = parser.parse_args()
    args.world = dict(args.world)
    M = max_visual_tokens(load_config(ModelSpec, preset_path(args.preset, "model"), args.model_overrides))
    try:  # checked before anything runs: a bad budget must not surface after 15 minutes of training
        args.budget_list = parse_budgets(args.budgets, M, "--budgets")
        args.sweep_budget_list = parse_budgets(args.sweep_budgets, M, "--sweep-budgets")
    except BudgetError as exc:
        parser.error(str(exc))
    ctx = Context(args=args, run_dir=args.run_dir.resolve())
    ctx.run_dir.mkdir(parents=True, exist_ok=True)

    configure_output(args.verbose)
    where = init_ray()
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"Ray: {where} ({cpus:.0f} CPUs); preset {args.preset}; run dir {ctx.run_dir}")
    started = time.perf_counter()
    steps = STEPS[: [name for name, _ in STEPS].index(args.until) + 1]
    for i, (name, step) in enumerate(steps, 1):
        print(f"\n=== step {i}/{len(steps)}: {name} ===", flush=True)
        start = time.perf_counter()
        step(ctx)
        seconds = time.perf_counter() - start
        ctx.results.setdefault("seconds", {})[name] = seconds
        print(f"--- {name} done in {seconds:.1f}s", flush=True)
    summary = ctx.run_dir / "summary.json"
    summary.write_text(json.dumps(ctx.results, indent=2, default=str))
    print(f"\nall steps in {time.perf_counter() - started:.0f}s; summary: {summary}")
    print("\n".join(["what to open next:", *ctx.next_steps()]))


if __name__ == "__main__":
    main()
