"""`jobs/evaluate.py`: a budget sweep, its report, and its MLflow run."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from mqt_llava.config import load_config
from mqt_llava.eval.report import normalised_average, write_report
from mqt_llava.eval.runner import PairResult, Sweep
from mqt_llava.eval.spec import EvalSpec, SweepConfig
from mqt_llava.output import configure_output
from mqt_llava.tracking import TrackingSpec, tracking_uri


def metric_key(benchmark: str, metric: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", f"{benchmark}/{metric}")


def log_to_mlflow(config: SweepConfig, results: list[PairResult], paths: dict[str, Path], tracking: TrackingSpec):
    from mqt_llava.tracking import RunTracker

    spec = config.spec
    tracker = RunTracker(tracking, str(config.out), run_name=f"eval:{Path(spec.model).name}")
    tracker.log_params(
        {
            "model": spec.model,
            "benchmarks": ",".join(spec.benchmark_names),
            "budgets": ",".join(map(str, config.budgets)),
            "options": spec.options,
            "limit": spec.limit,
            "judge": config.judge.model if config.judge else None,
        }
    )
    for m in config.budgets:
        row = [r for r in results if r.budget == m]
        metrics = {metric_key(r.benchmark, k): v for r in row for k, v in r.scores.items() if v == v}
        average = normalised_average(row)
        if average is not None:
            metrics["average_percent_of_max"] = average
        if metrics:
            tracker.log_metrics(metrics, step=m)  # the step is the budget: MLflow's charts are score vs m
    for key in ("results", "table", "advisor", "plots", "controls"):
        if key in paths:
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
    paths = write_report(results, config.out, config.spec.advisor_points)
    blank_m = sweep.run_blank_control()
    if blank_m is not None:
        from mqt_llava.eval.compare import blank_control, blank_control_markdown

        paths["controls"] = Path(config.out) / "controls.md"
        paths["controls"].write_text(
            f"Blank-image control: the same model and questions at m = {blank_m}, every "
            "image replaced by its own mean colour.\n\n" + blank_control_markdown(blank_control(sweep, blank_m))
        )
    log_to_mlflow(config, results, paths, tracking or TrackingSpec())
    log(f"[sweep] done in {time.perf_counter() - started:.0f}s; report in {config.out}")
    return results, paths


def evaluate(spec: EvalSpec, log=print):
    """The sweep an evaluation spec describes, its report and its MLflow run."""
    return run_evaluation(spec.sweep_config(), spec.tracking, log=log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate an export on benchmarks at several visual-token budgets.")
    parser.add_argument(
        "--config",
        default="tiny/evaluate",
        help="an EvalSpec: a YAML file or a packaged config (tiny/evaluate, llava-7b/evaluate)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the spec, e.g. --set model=runs/train/tiny-stage2/export --set budgets=2,8,M "
        "--set 'benchmarks=[pope,mme]' --set options.pope.splits=[random]",
    )
    parser.add_argument(
        "--compare",
        metavar="OTHER_OUT",
        help="another model's sweep `out` (same benchmarks and "
        "limit): A - B per benchmark and budget, paired by image, into compare.md",
    )
    parser.add_argument("--verbose", action="store_true", help="keep Ray's and the libraries' own logs")
    args = parser.parse_args(argv)
    configure_output(args.verbose)
    try:
        spec = load_config(EvalSpec, args.config, args.overrides)
        config = spec.sweep_config()
        # Every benchmark's files are read before Ray starts: a missing file is an error now.
        sweep = Sweep(config)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError, BudgetError, NotAnExport are ValueErrors
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    _, paths = run_evaluation(config, spec.tracking, sweep=sweep)
    print(paths["table"].read_text())
    print(paths["advisor"].read_text())
    if "controls" in paths:
        print(paths["controls"].read_text())
    if args.compare:
        from mqt_llava.eval.compare import compare_markdown, compare_sweeps

        text = compare_markdown(compare_sweeps(sweep, args.compare), str(config.out), args.compare)
        (Path(config.out) / "compare.md").write_text(text)
        print(text)
    print(f"report: {paths['table']}; plots: {paths['plots']}")
    print(f"MLflow: mlflow ui --backend-store-uri {tracking_uri(spec.tracking, str(config.out))}")
    return 0
