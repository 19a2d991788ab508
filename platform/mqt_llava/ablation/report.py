"""The ablation's report, from the trials' result.json files: `ablation_report.md` with a table
shaped like the paper's Table 2 (rows = variants, columns = benchmarks and their average, at m = M),
elastic vs fixed-m models at the fixed models' own m, the budget advisor per variant, and PNG curves
of score vs m per variant (mean over seeds, with the seeds' range where there are several)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mqt_llava.eval import stats
from mqt_llava.eval.benchmarks import BENCHMARKS
from mqt_llava.eval.heldout import Answers
from mqt_llava.eval.report import headline, normalised_average
from mqt_llava.eval.runner import PairResult

AVERAGE = "average"


@dataclass
class Trial:
    label: str  # "<variant>/seed<k>"
    variant: dict
    max_tokens: int
    results: list[PairResult]
    stage2_export: str | None = None
    kinds: dict[int, dict[str, float]] = field(default_factory=dict)  # m -> held-out exact match by kind
    schedule_support: list[int] | None = None  # the budgets stage 2 drew from

    @property
    def budgets(self) -> list[int]:
        """Every budget the trial was evaluated at (benchmarks or held-out questions)."""
        return sorted({r.budget for r in self.results} | set(self.kinds))

    def answers(self, m: int, control: str = "image") -> Answers | None:
        """The trial's kept held-out answers at m (None if it was not asked at m)."""
        if not self.stage2_export:
            return None
        path = Path(self.stage2_export).parent / "heldout" / f"m{m}-{control}.jsonl"
        return Answers.load(path) if path.exists() else None

    @property
    def group(self) -> str:
        """The variant without its seed: trials that differ only in seed are averaged."""
        return self.label.rsplit("/", 1)[0]

    def curve(self, benchmark: str) -> dict[int, float]:
        """m -> headline (or the normalised average over benchmarks, for AVERAGE)."""
        by_budget: dict[int, list[PairResult]] = defaultdict(list)
        for r in self.results:
            by_budget[r.budget].append(r)
        if benchmark == AVERAGE:
            return {m: v for m, row in sorted(by_budget.items()) if (v := normalised_average(row)) is not None}
        return {
            r.budget: v
            for r in sorted(self.results, key=lambda r: r.budget)
            if r.benchmark == benchmark and (v := headline(r)) is not None
        }


def load_trials(root: Path) -> list[Trial]:
    trials = []
    for path in sorted(root.glob("trials/*/result.json")):
        data = json.loads(path.read_text())
        results = [PairResult(**r) for r in data["results"]]
        kinds = {int(m): scores for m, scores in data.get("kinds", {}).items()}
        trials.append(
            Trial(
                data["label"],
                data["variant"],
                data["max_tokens"],
                results,
                data.get("stage2_export"),
                kinds,
                data.get("schedule_support"),
            )
        )
    return trials


def benchmarks_of(trials: list[Trial]) -> list[str]:
    present = {r.benchmark for t in trials for r in t.results}
    return [name for name in BENCHMARKS if name in present]


def groups(trials: list[Trial]) -> dict[str, list[Trial]]:
    out: dict[str, list[Trial]] = defaultdict(list)
    for t in trials:
        out[t.group].append(t)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "baseline", kv[0])))


def mean_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean, sd = mean_spread(values)
    return f"{mean:.1f} ± {sd:.1f}" if len(values) > 1 else f"{mean:.1f}"


def at(trials: list[Trial], benchmark: str, m: int | None) -> list[float]:
    """Each seed's score at m (None: each trial's own M)."""
    out = []
    for t in trials:
        value = t.curve(benchmark).get(t.max_tokens if m is None else m)
        if value is not None:
            out.append(value)
    return out


def table2(trials: list[Trial]) -> str:
    names = benchmarks_of(trials)
    lines = [
        "| variant | seeds | " + " | ".join(BENCHMARKS[n].title for n in names) + " | Avg (% of max) |",
        "|---|---:|" + "---:|" * (len(names) + 1),
    ]
    for group, members in groups(trials).items():
        if members[0].variant.get("fixed_tokens") is not None:
            continue  # fixed-m models are compared at their own m (below), not at M
        cells = [cell(at(members, n, None)) for n in [*names, AVERAGE]]
        lines.append(f"| {group} | {len(members)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def elastic_vs_fixed(trials: list[Trial]) -> str | None:
    """Each fixed-m model against the baseline (one elastic model) at that m."""
    by_group = groups(trials)
    baseline = by_group.get("baseline")
    fixed = {g: ts for g, ts in by_group.items() if ts[0].variant.get("fixed_tokens") is not None}
    if not baseline or not fixed:
        return None
    names = [*benchmarks_of(trials), AVERAGE]
    lines = [
        "| m | model | "
        + " | ".join(BENCHMARKS[n].title if n in BENCHMARKS else "Avg (% of max)" for n in names)
        + " |",
        "|---:|---|" + "---:|" * len(names),
    ]
    for group, members in sorted(fixed.items(), key=lambda kv: kv[1][0].variant["fixed_tokens"]):
        m = members[0].variant["fixed_tokens"]
        lines.append(f"| {m} | {group} | " + " | ".join(cell(at(members, n, m)) for n in names) + " |")
        lines.append(f"| {m} | baseline (elastic) | " + " | ".join(cell(at(baseline, n, m)) for n in names) + " |")
    return "\n".join(lines) + "\n"


def mean_curve(members: list[Trial], benchmark: str) -> dict[int, list[float]]:
    points: dict[int, list[float]] = defaultdict(list)
    for t in members:
        for m, v in t.curve(benchmark).items():
            points[m].append(v)
    return dict(sorted(points.items()))


def advisor(trials: list[Trial], points: float) -> str:
    """Per benchmark and variant: the smallest m whose mean score is within `points` of the best."""
    grouped = {g: ts for g, ts in groups(trials).items() if ts[0].variant.get("fixed_tokens") is None}
    lines = ["| benchmark | " + " | ".join(grouped) + " |", "|---|" + "---:|" * len(grouped)]
    for name in benchmarks_of(trials):
        cells = []
        for members in grouped.values():
            curve = {m: statistics.fmean(v) for m, v in mean_curve(members, name).items()}
            if not curve:
                cells.append("–")
                continue
            best = max(curve.values())
            cells.append(str(min(m for m, v in curve.items() if v >= best - points)))
        lines.append(f"| {BENCHMARKS[name].title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(trials: list[Trial], out: Path) -> list[Path]:
    if not trials:  # an experiment interrupted before its first trial finished: nothing to draw
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name in [*benchmarks_of(trials), AVERAGE]:
        curves = {group: mean_curve(members, name) for group, members in groups(trials).items()}
        if not any(curves.values()):  # no trial scored this benchmark: no empty plot
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for group, members in groups(trials).items():
            curve = curves[group]
            if not curve:
                continue
            ms = list(curve)
            means = [statistics.fmean(v) for v in curve.values()]
            style = {"ls": "none", "marker": "s", "ms": 7} if len(ms) == 1 else {"marker": "o", "ms": 3}
            (line,) = ax.plot(ms, means, label=group, **style)
            if len(members) > 1:
                ax.fill_between(
                    ms,
                    [min(v) for v in curve.values()],
                    [max(v) for v in curve.values()],
                    color=line.get_color(),
                    alpha=0.15,
                    lw=0,
                )
        title = BENCHMARKS[name].title if name in BENCHMARKS else "Average (% of max)"
        ax.set_xscale("log", base=2)
        ax.set_xlabel("visual tokens m")
        ax.set_ylabel(BENCHMARKS[name].metric if name in BENCHMARKS else "% of max")
        ax.set_title(f"{title}: score vs m per variant")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"curve_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def heldout_budgets(members: list[Trial]) -> list[int]:
    """The budgets every member kept held-out answers at."""
    common = None
    for t in members:
        have = {m for m in t.budgets if t.answers(m) is not None}
        common = have if common is None else common & have
    return sorted(common or ())


def heldout_curves(
    members: list[Trial], kinds: Sequence[str] | None = None
) -> dict[str, dict[int, tuple[float, float, float]]]:
    """Per kind (in `kinds`' order; default: as they first appear) and "all": m -> (accuracy, low,
    high) on the held-out questions: one seed's scene bootstrap interval, or with several seeds the
    mean with a t-interval over them."""
    curves: dict[str, dict[int, tuple[float, float, float]]] = defaultdict(dict)
    for m in heldout_budgets(members):
        per_seed = [t.answers(m).intervals(kinds) for t in members]
        for kind in per_seed[0]:
            if len(per_seed) == 1:
                i = per_seed[0][kind]
                curves[kind][m] = (i.estimate, i.low, i.high)
            else:
                summary = stats.across_seeds([seed[kind].estimate for seed in per_seed])
                curves[kind][m] = (summary.mean, summary.low, summary.high)
    return dict(curves)


def plot_heldout(trials: list[Trial], out: Path, kinds: Sequence[str] | None = None) -> list[Path]:
    """Held-out accuracy vs m with 95 % bands: every variant with a curve on one plot, and the
    baseline's curve per question kind (the paper's Fig. 5, on the question set's kinds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_group = {g: heldout_curves(ts, kinds) for g, ts in groups(trials).items()}
    by_group = {g: c for g, c in by_group.items() if c and len(c["all"]) > 1}
    paths = []
    figures = [("heldout_variants", "held-out accuracy vs m, per variant", {g: c["all"] for g, c in by_group.items()})]
    if "baseline" in by_group:
        kinds = {k: v for k, v in by_group["baseline"].items() if k != "all"}
        figures.append(("heldout_kinds", "baseline: held-out accuracy vs m, per question kind", kinds))
    for name, title, lines in figures:
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, curve in lines.items():
            ms = sorted(curve)
            (line,) = ax.plot(ms, [100 * curve[m][0] for m in ms], marker="o", ms=3, label=label)
            ax.fill_between(
                ms,
                [100 * curve[m][1] for m in ms],
                [100 * curve[m][2] for m in ms],
                color=line.get_color(),
                alpha=0.15,
                lw=0,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("visual tokens m")
        ax.set_ylabel("exact match (%), 95 % band")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_report(
    trials: list[Trial],
    out: Path,
    points: float = 1.0,
    title: str = "Ablation",
    claims: str | None = None,
    controls: str | None = None,
    kinds: Sequence[str] | None = None,
) -> Path:
    """`claims`: the claims table (ablation.claims.claims_markdown), placed first when given;
    `controls`: each variant beside its no-image controls (ablation.claims.controls_markdown);
    `kinds`: the held-out question kinds, in the order the per-kind plot shows them."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = sorted({t.variant.get("seed", 0) for t in trials})
    maxima = sorted({t.max_tokens for t in trials})
    sections = [
        f"# {title}\n",
        f"{len(trials)} trials, {len(groups(trials))} variants, seeds {seeds}. Scores are the headline metrics "
        "(mean ± s.d. over seeds where there are several); the average is each benchmark's headline as a "
        "percentage of its maximum, averaged.\n",
        *(["## The paper's claims\n", claims] if claims else []),
        *(["## Each variant beside its no-image controls (held-out questions, m = M)\n", controls] if controls else []),
        f"## Variants at m = M ({', '.join(map(str, maxima))}) — the paper's Table 2\n",
        table2(trials),
    ]
    versus = elastic_vs_fixed(trials)
    if versus:
        sections += ["## One elastic model vs fixed-m models, at the fixed models' m\n", versus]
    sections += [
        f"## Budget advisor: the smallest m within {points:g} points of each variant's best\n",
        advisor(trials, points),
    ]
    plots = plot_heldout(trials, out, kinds) + plot_curves(trials, out)
    sections += ["## Score vs m per variant\n", "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n"]
    path = out / "ablation_report.md"
    path.write_text("\n".join(sections))
    return path
