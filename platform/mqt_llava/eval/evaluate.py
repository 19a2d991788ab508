"""`jobs/evaluate.py`: a budget sweep, its report, and its MLflow run."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import yaml

from mqt_llava.config import TrackingSpec
from mqt_llava.eval.benchmarks import BENCHMARKS
from mqt_llava.eval.judge import Judge
from mqt_llava.eval.report import normalised_average, write_report
from mqt_llava.eval.runner import PairResult, Sweep, SweepConfig
from mqt_llava.model.budgets import PAPER_BUDGETS, default_budgets, parse_budgets
from mqt_llava.model.export import check_export, max_visual_tokens


def parse_options(items: list[str]) -> dict[str, dict]:
    """["pope.splits=[random]", "mmbench.circular=true"] -> {"pope": {"splits": ["random"]}, ...}."""
    options: dict[str, dict] = {}
    for item in items:
        name, sep, value = item.partition("=")
        bench, dot, key = name.partition(".")
        if not sep or not dot or bench not in BENCHMARKS:
            raise ValueError(f"--option {item!r}: expected BENCHMARK.KEY=VALUE with a known benchmark")
        options.setdefault(bench, {})[key] = yaml.safe_load(value)
    return options


def metric_key(benchmark: str, metric: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", f"{benchmark}/{metric}")


def log_to_mlflow(config: SweepConfig, results: list[PairResult], paths: dict[str, Path], tracking: TrackingSpec):
    from mqt_llava.tracking import RunTracker

    tracker = RunTracker(tracking, str(config.out), run_name=f"eval:{Path(config.model).name}")
    tracker.log_params({"model": config.model, "benchmarks": ",".join(config.benchmarks),
                        "budgets": ",".join(map(str, config.budgets)), "options": config.options,
                        "limit": config.limit, "judge": config.judge.model if config.judge else None})  # fmt: skip
    for m in config.budgets:
        row = [r for r in results if r.budget == m]
        metrics = {metric_key(r.benchmark, k): v for r in row for k, v in r.scores.items() if v == v}
        average = normalised_average(row)
        if average is not None:
            metrics["average_percent_of_max"] = average
        if metrics:
            tracker.log_metrics(metrics, step=m)  # the step is the budget: MLflow's charts are score vs m
    for key in ("results", "table", "advisor", "plots"):
        tracker.log_artifact(paths[key], "plots" if key == "plots" else None)
    tracker.finish()
    return tracker


def run_evaluation(config: SweepConfig, tracking: TrackingSpec | None = None, log=print, sweep: Sweep | None = None):
    """Sweep, report, MLflow; returns (results, report paths). `sweep`: one already built from
    `config` (its benchmark files read), so they are not read again."""
    import ray

    from mqt_llava.ray_runtime import init_ray

    if not ray.is_initialized():
        init_ray()
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # progress comes as periodic lines
    sweep = sweep or Sweep(config, log)
    started = time.perf_counter()
    results = sweep.run()
    paths = write_report(results, Path(config.out), config.advisor_points)
    log_to_mlflow(config, results, paths, tracking or TrackingSpec())
    log(f"[sweep] done in {time.perf_counter() - started:.0f}s; report in {config.out}")
    return results, paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate an export on benchmarks at several visual-token budgets.")
    parser.add_argument("--model", required=True, help="an export directory (jobs/stage2.py writes <run>/export)")
    parser.add_argument("--benchmarks", default="all", help=f"comma-separated, or all: {','.join(BENCHMARKS)}")
    parser.add_argument("--data-root", type=Path, default=Path("playground/data/eval"),
                        help="one directory per benchmark, in LLaVA-1.5's evaluation layout")  # fmt: skip
    paper = ",".join(map(str, PAPER_BUDGETS))
    parser.add_argument("--budgets", help=f"visual-token budgets, M = the model's maximum; default: {paper} "
                        "up to M, and M")  # fmt: skip
    parser.add_argument("--out", type=Path, help="default: runs/eval/<export's parent directory name>")
    parser.add_argument("--option", action="append", default=[], metavar="BENCH.KEY=VALUE")
    parser.add_argument("--limit", type=int, help="about N samples of each benchmark, drawn at random (seeded)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--actors", type=int, default=1, help="inference-engine actors")
    parser.add_argument("--actor-cpus", type=float, default=1.0)
    parser.add_argument("--gpu", action="store_true", help="one GPU per actor, bf16")
    parser.add_argument("--torch-threads", type=int)
    parser.add_argument("--judge-url", help="an OpenAI-compatible API base (LLaVA-Bench, MM-Vet)")
    parser.add_argument("--judge-model")
    parser.add_argument("--judge-key-env", default="OPENAI_API_KEY")
    parser.add_argument("--advisor-points", type=float, default=1.0, help="the budget advisor's tolerance")
    parser.add_argument("--tracking-uri", help="MLflow; default MLFLOW_TRACKING_URI, else <out>/mlflow.db")
    args = parser.parse_args(argv)
    try:
        check_export(args.model, "--model")
        names = list(BENCHMARKS) if args.benchmarks == "all" else [b.strip() for b in args.benchmarks.split(",")]
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            raise ValueError(f"--benchmarks: unknown {unknown}; known: {', '.join(BENCHMARKS)}")
        maximum = max_visual_tokens(args.model)
        out = args.out or Path("runs/eval") / Path(args.model).resolve().parent.name
        config = SweepConfig(
            model=str(Path(args.model).resolve()),
            out=out.resolve(),
            data_root=args.data_root.resolve(),
            benchmarks=names,
            budgets=parse_budgets(args.budgets, maximum, "--budgets") if args.budgets else default_budgets(maximum),
            options=parse_options(args.option),
            limit=args.limit,
            batch_size=args.batch_size,
            actors=args.actors,
            actor_cpus=args.actor_cpus,
            use_gpu=args.gpu,
            torch_threads=args.torch_threads,
            judge=Judge.from_options(args.judge_url, args.judge_model, args.judge_key_env),
            advisor_points=args.advisor_points,
        )
        # Every benchmark's files are read before Ray starts: a missing file is an error now.
        sweep = Sweep(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    _, paths = run_evaluation(config, TrackingSpec(uri=args.tracking_uri), sweep=sweep)
    print(paths["table"].read_text())
    print(paths["advisor"].read_text())
    return 0
