"""A sweep's report: results.csv (every metric), a Markdown table shaped like the paper's Table 1
(rows = budgets, columns = benchmarks' headline metrics, a normalised average), score-vs-tokens
plots on a log x-axis (the paper's Figs. 5 and 8), and a per-benchmark budget advisor."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from mqt_llava.eval.benchmarks import BENCHMARKS, table_columns
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


@dataclass(frozen=True)
class TableColumn:
    """One column of Table 1: a benchmark's metric, its title and its maximum (as the benchmark
    declares it in its `columns`)."""

    benchmark: str
    metric: str
    title: str
    scale: float = 100.0

    def value(self, result: PairResult) -> float | None:
        return result.scores.get(self.metric) if result.status == "scored" else None

    def normalised(self, result: PairResult) -> float | None:
        """Out of 100: MME's scores over their maxima (2000 perception, 800 cognition; a partial MME
        over the subtasks it has), the others as they are."""
        value = self.value(result)
        return None if value is None else value / result.scores.get(f"{self.metric}_max", self.scale) * 100


def paper_columns() -> list[TableColumn]:
    """Table 1's columns as the registered benchmarks declare them, in their order: with the built-in
    benchmarks, the paper's 11, whose mean is its "Avg"."""
    return [TableColumn(name, c.metric, c.title, c.scale) for name, c in table_columns()]


def normalised_average(row: list[PairResult]) -> float | None:
    """The paper's average over the Table 1 columns scored in `row` (one budget's results): each
    column out of 100, then their mean. With all 11 it is the paper's "Avg"."""
    by = {r.benchmark: r for r in row}
    values = [v for c in paper_columns() if c.benchmark in by and (v := c.normalised(by[c.benchmark])) is not None]
    return sum(values) / len(values) if values else None


def cell(result: PairResult, value: float | None, bounds: tuple[float, float] | None) -> str:
    if value is None:
        return {"upload": "to upload", "skipped": "skipped"}.get(result.status, "–")
    return f"{value:.1f}" + (f" [{bounds[0]:.1f}, {bounds[1]:.1f}]" if bounds else "")


def heading(column_title: str, result: PairResult) -> str:
    """A column's heading: the paper's, or the sweep's own where its split or scorer is not the
    paper's ("MMB" -> "MMB (local, no GPT matching)"; MME's two columns keep their suffixes)."""
    if not result.title:
        return column_title
    base = BENCHMARKS[result.benchmark].title
    return result.title + column_title[len(base) :] if column_title.startswith(base) else result.title


def upload_notes(results: list[PairResult]) -> list[str]:
    """Where each server-scored column's upload files are, one line per benchmark."""
    lines = []
    for name in dict.fromkeys(r.benchmark for r in results if r.status == "upload"):
        rows = sorted((r for r in results if r.benchmark == name and r.status == "upload"), key=lambda r: r.budget)
        files = "; ".join(f"m = {r.budget}: {', '.join(r.uploads) or '(none written)'}" for r in rows)
        lines.append(
            f"- {BENCHMARKS[name].title}: to upload to its evaluation server, which gives the paper's "
            f"number (none is computed here): {files}"
        )
    return lines


def table(results: list[PairResult]) -> str:
    """The paper's Table 1 for the benchmarks present (its columns, its order, MME as perception and
    cognition, its normalised average), then any benchmark outside it (TextVQA) in a table of its own."""
    present = {r.benchmark for r in results}
    every = paper_columns()
    columns = [c for c in every if c.benchmark in present]
    others = [n for n in BENCHMARKS if n in present and n not in {c.benchmark for c in every}]
    budgets = sorted({r.budget for r in results})
    by = {(r.benchmark, r.budget): r for r in results}
    scored = {c for c in columns for m in budgets if c.value(by[(c.benchmark, m)]) is not None}
    # The paper's "Avg" needs every column, each scored as the paper scored it (no local stand-in).
    papers = {c for c in scored if not by[(c.benchmark, budgets[0])].title}
    average = "Avg" if len(papers) == len(every) else "Avg of the scored columns (not the paper's 11)"
    titles = [heading(c.title, by[(c.benchmark, budgets[0])]) for c in columns]
    lines = ["| # tokens | " + " | ".join(titles) + f" | {average} |", "|---:|" + "---:|" * (len(columns) + 1)]
    for m in budgets:
        cells = []
        for c in columns:
            r = by[(c.benchmark, m)]
            bounds = interval(r) if c.metric == BENCHMARKS[c.benchmark].metric else None
            cells.append(cell(r, c.value(r), bounds))
        mean = normalised_average([by[(n, m)] for n in present])
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {'' if mean is None else f'{mean:.1f}'} |")
    if others:
        lines += [
            "",
            "Beyond the paper's Table 1:",
            "",
            "| # tokens | " + " | ".join(heading(BENCHMARKS[n].title, by[(n, budgets[0])]) for n in others) + " |",
            "|---:|" + "---:|" * len(others),
        ]
        for m in budgets:
            row = [by[(n, m)] for n in others]
            lines.append(f"| {m} | " + " | ".join(cell(r, headline(r), interval(r)) for r in row) + " |")
    notes = sorted(
        {f"- {BENCHMARKS[r.benchmark].title}: skipped ({r.reason})" for r in results if r.status == "skipped"}
    )
    notes += upload_notes(results)
    names = [n for n in BENCHMARKS if n in present]
    counts = ", ".join(f"{BENCHMARKS[n].title} {by[(n, budgets[0])].samples}" for n in names)
    return (
        "\n".join(lines) + f"\n\n{average}: the mean of the columns, each out of 100 (MME-P of 2000, MME-C of "
        f"800), as the paper's Table 1 averages its 11. [95 % interval]: bootstrap over images. "
        f"Questions per budget: {counts}.\n" + ("\n".join(notes) + "\n" if notes else "")
    )


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
        advice[name] = {
            "best": best,
            "best_budget": best_m,
            "advised_budget": smallest,
            "advised_score": dict(scored)[smallest],
            "points": points,
            "title": heading(BENCHMARKS[name].title, rows[0]),
        }
    return advice


def advisor_markdown(advice: dict[str, dict], points: float) -> str:
    lines = [
        f"| benchmark | best | at m | smallest m within {points:g} points | its score |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, a in advice.items():
        lines.append(
            f"| {a.get('title', BENCHMARKS[name].title)} | {a['best']:.1f} | {a['best_budget']} | "
            f"{a['advised_budget']} | {a['advised_score']:.1f} |"
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

    bands = {
        name: [
            interval(r)
            for r in sorted(results, key=lambda r: r.budget)
            if r.benchmark == name and headline(r) is not None
        ]
        for name in series
    }

    def draw(ax, name, points, log_x=True):
        (line,) = ax.plot([m for m, _ in points], [v for _, v in points], marker="o")
        if all(bands[name]):  # the 95 % bootstrap interval at each budget
            ax.fill_between(
                [m for m, _ in points],
                [b[0] for b in bands[name]],
                [b[1] for b in bands[name]],
                color=line.get_color(),
                alpha=0.2,
                lw=0,
            )
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
