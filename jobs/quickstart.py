"""Quickstart: the tiny pipeline end to end, one step after another, on one machine.

    python jobs/quickstart.py                                  # embedded local Ray, ~10 min on 2 cores
    python jobs/quickstart.py --set until=shards --set world.num_eval=500   # stop early, another world
    python jobs/quickstart.py --config tiny/reproduction       # the pilot's sizes (docs/ablation/)
    ray job submit -- python jobs/quickstart.py                # the same on a cluster

Steps (mqt_llava.recipes.quickstart):
  1. data         a synthetic corpus in LLaVA's formats (558K-like captions, 665K-like instructions,
                  held-out evaluation scenes), and benchmark files in the official formats (POPE,
                  VQAv2, GQA, ScienceQA, MME, MMBench) made from the held-out scenes
  2. base models  the tiny preset's pretrained parts (tokenizer, CLIP, Llama LM): the ones the package
                  ships (made once by jobs/base_models.py), or made here when the run asks for others
  3. shards       both sets converted to Parquet shards (rejects counted)
  4. stage 1      the connector alone, plain template, all M tokens (Ray Train + DeepSpeed ZeRO-2)
  5. stage 2      connector + LLM, vicuna_v1, m drawn each step (ZeRO-2), from stage 1's export
  6. evaluate     held-out exact match at each budget beside its controls (majority answer, blank image)
  7. benchmarks   the budget sweep over the benchmark files (jobs/evaluate.py's library)
  8. serve        serve_apps/config.yaml's application on the stage-2 export, on loopback: one chat
                  completion per model id (each tier and `auto`) over HTTP, and a refused bad request
  9. ablation     a two-trial Ray Tune grid (linear vs log schedule, from step 4's stage 1), with MLflow
                  runs and ablation_report.md (the toy reproduction of Table 2 is tiny/ablation)

Every step skips what an earlier run of the same run_dir finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import ray

from mqt_llava.config import ConfigError, load_config
from mqt_llava.model.budgets import BudgetError, parse_budgets
from mqt_llava.model.spec import ModelSpec, connector_token_range
from mqt_llava.output import configure_output
from mqt_llava.ray_runtime import init_ray
from mqt_llava.recipes.quickstart import STEPS, Context, QuickstartSpec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny/quickstart", help="a QuickstartSpec: a YAML file or packaged config")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set world.num_pretrain=2000 --set stage2.epochs=1",
    )
    parser.add_argument("--verbose", action="store_true", help="keep Ray's, Ray Train's and the libraries' own logs")
    args = parser.parse_args()
    try:  # checked before anything runs: a bad budget must not surface after 15 minutes of training
        ctx = Context(load_config(QuickstartSpec, args.config, args.overrides))
        low, M = connector_token_range(load_config(ModelSpec, ctx.config("model"), ctx.spec.overrides("model")))
        parse_budgets(ctx.spec.heldout_budgets, M, "heldout_budgets", low)
        if ctx.evaluation().budgets:
            parse_budgets(ctx.evaluation().budgets, M, "evaluate.budgets", low)
    except (ConfigError, BudgetError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    ctx.run_dir.mkdir(parents=True, exist_ok=True)

    configure_output(args.verbose)
    where = init_ray()
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"Ray: {where} ({cpus:.0f} CPUs); preset {ctx.spec.preset}; run dir {ctx.run_dir}")
    started = time.perf_counter()
    names = [name for name, _ in STEPS]
    steps = STEPS[: names.index(ctx.spec.until) + 1]
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
