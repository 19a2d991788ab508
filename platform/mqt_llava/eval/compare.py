"""Two models' sweeps compared on the same questions: for each (benchmark, budget) both predicted,
the headline of A minus that of B with a paired 95 % bootstrap interval (the same images drawn for
both, scored by the benchmark's own `score`) and a three-way verdict. Written by
`jobs/evaluate.py --compare OTHER_OUT` as `compare.md` beside the sweep's own report.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mqt_llava.eval import stats
from mqt_llava.eval.runner import Sweep, image_groups, resampled_headline


@dataclasses.dataclass
class Difference:
    benchmark: str
    budget: int
    a: float
    b: float
    low: float
    high: float
    samples: int

    @property
    def verdict(self) -> str:
        return "A better" if self.low > 0 else "B better" if self.high < 0 else "inconclusive"


def predictions(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["key"]: r["prediction"] for r in rows if not r["error"]}


def paired_headline(benchmark, samples, a: dict[str, str], b: dict[str, str], m: int, resamples: int = 1000):
    """A's headline minus B's on the same samples, with a paired bootstrap interval by image."""

    def difference(drawn):
        x, y = resampled_headline(benchmark, drawn, a), resampled_headline(benchmark, drawn, b)
        return None if x is None or y is None else x - y

    bounds = stats.bootstrap_statistic(image_groups(samples), difference, resamples=resamples, seed=m)
    if bounds is None:
        return None
    whole = [(0, s) for s in samples]
    values = resampled_headline(benchmark, whole, a), resampled_headline(benchmark, whole, b)
    return Difference(benchmark.name, m, *values, *bounds, len(samples))


def compare_sweeps(sweep: Sweep, other_out: str | Path, resamples: int = 1000) -> list[Difference]:
    """`sweep`'s predictions (A) against those kept under `other_out` (B) for the same samples."""
    out = []
    for name, benchmark in sweep.benchmarks.items():
        if benchmark.needs_judge or benchmark.server_scored:
            continue  # every resample would cost judge calls; a server-scored split has no local number
        for m in sweep.config.budgets:
            a = predictions(sweep.predictions_path(name, m))
            b = predictions(Path(other_out) / "predictions" / name / f"m{m}.jsonl")
            if a is not None and b is not None:
                found = paired_headline(benchmark, sweep.samples[name], a, b, m, resamples)
                out += [found] if found else []
    return out


def blank_control(sweep: Sweep, m: int, resamples: int = 1000) -> list[Difference]:
    """Each benchmark at m with its images (A) against the same model with them blanked (B)."""
    out = []
    for name, benchmark in sweep.benchmarks.items():
        if benchmark.needs_judge or benchmark.server_scored:
            continue
        a, b = predictions(sweep.predictions_path(name, m)), predictions(sweep.predictions_path(name, m, True))
        if a is not None and b is not None:
            found = paired_headline(benchmark, sweep.samples[name], a, b, m, resamples)
            out += [found] if found else []
    return out


def blank_control_markdown(differences: list[Difference]) -> str:
    lines = [
        "| benchmark | m | with the image | blank image | difference [95 % interval, paired by image] | "
        "uses the image |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for d in differences:
        uses = {"A better": "yes", "B better": "no (worse with it)", "inconclusive": "not shown"}[d.verdict]
        lines.append(
            f"| {d.benchmark} | {d.budget} | {d.a:.1f} | {d.b:.1f} | {d.a - d.b:+.1f} [{d.low:+.1f}, "
            f"{d.high:+.1f}] | {uses} |"
        )
    return "\n".join(lines) + "\n"


def compare_markdown(differences: list[Difference], a: str, b: str) -> str:
    lines = [
        f"A: {a}  \nB: {b}\n",
        "| benchmark | m | A | B | A - B [95 % interval, paired by image] | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for d in differences:
        lines.append(
            f"| {d.benchmark} | {d.budget} | {d.a:.1f} | {d.b:.1f} | {d.a - d.b:+.1f} [{d.low:+.1f}, "
            f"{d.high:+.1f}] | {d.verdict} |"
        )
    return "\n".join(lines) + "\n"
