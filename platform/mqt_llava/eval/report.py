"""A sweep's report: results.csv (every metric), a Markdown table shaped like the paper's Table 1
(rows = budgets, columns = benchmarks' headline metrics, a normalised average), score-vs-tokens
plots on a log x-axis (the paper's Figs. 5 and 8), and a per-benchmark budget advisor."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from mqt_llava.eval.benchmarks import BENCHMARKS
from mqt_llava.eval.runner import PairResult


def headline(result: PairResult) -> float | None:
    metric = BENCHMARKS[result.benchmark].metric
    return result.scores.get(metric) if result.status == "scored" else None


def interval(result: PairResult) -> tuple[float, float] | None:
    """The headline's 95 % bootstrap interval (by image), where the sweep computed one."""
    metric = BENCHMARKS[result.benchmark].metric
    low, high = result.scores.get(f"{metric}_low"), result.scores.get(f"{metric}_high")
    return None if low is None or high is None or headline(result) is None else (low, high)


def headline_max(result: PairResult) -> float:
    """The headline's maximum: MME's perception is out of 200 per subtask present."""
    metric = BENCHMARKS[result.benchmark].metric
    return result.scores.get(f"{metric}_max", BENCHMARKS[result.benchmark].scale)


def write_csv(results: list[PairResult], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["benchmark", "budget", "status", "metric", "value", "samples", "rejected", "reason"])
        for r in results:
            if not r.scores:
                writer.writerow([r.benchmark, r.budget, r.status, "", "", r.samples, r.rejected, r.reason])
            for metric, value in r.scores.items():
                writer.writerow([r.benchmark, r.budget, r.status, metric, f"{value:.4f}", r.samples, r.rejected, ""])


def normalised_average(row: list[PairResult]) -> float | None:
    """The mean, over the benchmarks scored at this budget, of headline / its maximum x 100."""
    values = [headline(r) / headline_max(r) * 100 for r in row if headline(r) is not None]
    return sum(values) / len(values) if values else None


def table(results: list[PairResult]) -> str:
    present = {r.benchmark for r in results}
    names = [n for n in BENCHMARKS if n in present]  # the paper's column order
    budgets = sorted({r.budget for r in results})
    by = {(r.benchmark, r.budget): r for r in results}
    titles = [BENCHMARKS[n].title for n in names]
    lines = [
        "| # tokens | " + " | ".join(titles) + " | Avg (% of max) |",
        "|---:|" + "---:|" * (len(names) + 1),
    ]
    for m in budgets:
        row = [by[(n, m)] for n in names]
        cells = []
        for r in row:
            value, bounds = headline(r), interval(r)
            if value is None:
                cells.append({"submission": "server", "skipped": "skipped"}[r.status])
            else:
                cells.append(f"{value:.1f}" + (f" [{bounds[0]:.1f}, {bounds[1]:.1f}]" if bounds else ""))
        average = normalised_average(row)
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {'' if average is None else f'{average:.1f}'} |")
    notes = sorted(
        {f"- {BENCHMARKS[r.benchmark].title}: skipped ({r.reason})" for r in results if r.status == "skipped"}
    )
    notes += sorted({f"- {BENCHMARKS[r.benchmark].title}: scored by its evaluation server (submission files written)"
                     for r in results if r.status == "submission"})  # fmt: skip
    metrics = ", ".join(f"{BENCHMARKS[n].title} {BENCHMARKS[n].metric}" for n in names)
    counts = ", ".join(f"{BENCHMARKS[n].title} {by[(n, budgets[0])].samples}" for n in names)
    return ("\n".join(lines) + f"\n\nHeadline metrics: {metrics}. [95 % interval]: bootstrap over images. "
            f"Questions per budget: {counts}.\n" + ("\n".join(notes) + "\n" if notes else ""))  # fmt: skip


def advise(results: list[PairResult], points: float) -> dict[str, dict]:
    """Per benchmark: its best headline and budget, and the smallest budget within `points` of it,
    counting the noise: where the sweep has intervals, a budget qualifies only when its whole
    interval lies above best - points (with few questions that is often only the best budget)."""
    advice = {}
    for name in dict.fromkeys(r.benchmark for r in results):
        rows = sorted((r for r in results if r.benchmark == name and headline(r) is not None), key=lambda r: r.budget)
        scored = [(r.budget, headline(r)) for r in rows]
        if not scored:
            continue
        best_m, best = max(scored, key=lambda x: (x[1], -x[0]))
        lowest = {r.budget: (interval(r) or (headline(r), headline(r)))[0] for r in rows}
        smallest = min([m for m, _ in scored if lowest[m] >= best - points] or [best_m])
        advice[name] = {"best": best, "best_budget": best_m, "advised_budget": smallest,
                        "advised_score": dict(scored)[smallest], "points": points}  # fmt: skip
    return advice


def advisor_markdown(advice: dict[str, dict], points: float) -> str:
    lines = [
        f"| benchmark | best | at m | smallest m within {points:g} points | its score |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, a in advice.items():
        lines.append(
            f"| {BENCHMARKS[name].title} | {a['best']:.1f} | {a['best_budget']} | {a['advised_budget']} | "
            f"{a['advised_score']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[PairResult], out_dir: Path) -> list[Path]:
    """Headline vs visual tokens: one PNG per benchmark and one with every benchmark, on a log x-axis
    (the paper's Figs. 5 and 8), and that page again on a linear x-axis (its Fig. 9)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    series = {}
    for name in dict.fromkeys(r.benchmark for r in results):
        points = sorted((r.budget, headline(r)) for r in results if r.benchmark == name and headline(r) is not None)
        if points:
            series[name] = points
    paths = []

    bands = {name: [interval(r) for r in sorted(results, key=lambda r: r.budget)
                    if r.benchmark == name and headline(r) is not None] for name in series}  # fmt: skip

    def draw(ax, name, points, log_x=True):
        (line,) = ax.plot([m for m, _ in points], [v for _, v in points], marker="o")
        if all(bands[name]):  # the 95 % bootstrap interval at each budget
            ax.fill_between([m for m, _ in points], [b[0] for b in bands[name]], [b[1] for b in bands[name]],
                            color=line.get_color(), alpha=0.2, lw=0)  # fmt: skip
        if log_x:
            ax.set_xscale("log", base=2)
            ax.set_xticks([m for m, _ in points], [str(m) for m, _ in points])
        ax.set_xlabel("visual tokens (m)")
        ax.set_ylabel(BENCHMARKS[name].metric)
        ax.set_title(BENCHMARKS[name].title)
        ax.grid(alpha=0.3)

    for name, points in series.items():
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        draw(ax, name, points)
        fig.tight_layout()
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    for log_x, filename in ((True, "all_benchmarks.png"), (False, "all_benchmarks_linear.png")):
        if not series:
            break
        cols = min(4, len(series))
        rows = math.ceil(len(series) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
        for ax, (name, points) in zip(axes.flat, series.items(), strict=False):
            draw(ax, name, points, log_x)
        for ax in list(axes.flat)[len(series) :]:
            ax.axis("off")
        fig.tight_layout()
        paths.append(out_dir / filename)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(results: list[PairResult], out: Path, points: float) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.csv", "table": out / "table.md", "advisor": out / "advisor.md"}
    write_csv(results, paths["results"])
    paths["table"].write_text(table(results))
    paths["advisor"].write_text(advisor_markdown(advise(results, points), points))
    plot(results, out / "plots")
    paths["plots"] = out / "plots"
    return paths
