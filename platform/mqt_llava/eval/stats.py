"""Intervals, paired comparisons and three-way verdicts for accuracies measured on a finite set of
questions. Used by `jobs/evaluate.py` for one model and by the ablation report for many.

Questions about the same image are not independent (a model that misreads an image tends to miss
all of its questions), so every bootstrap here resamples *groups* (an image, a scene) with their
questions, never single questions. Comparisons are paired: two models answer the same questions,
and the difference is resampled question set by question set, which removes the between-question
variance that an unpaired comparison would carry.

A difference is a verdict only when its interval excludes zero: "reproduced" (the expected
direction), "contradicted" (the opposite one) or "inconclusive" (zero inside the interval). Each
verdict carries the smallest difference the design could have detected (80 % power at the same
level), so "inconclusive" says how large an effect could still hide in the noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95
RESAMPLES = 2000
POWER = 0.8
VERDICTS = ("reproduced", "contradicted", "inconclusive")


@dataclass(frozen=True)
class Interval:
    """An accuracy (a share in 0..1) with its bootstrap interval over `groups` groups of `n` questions."""

    estimate: float
    low: float
    high: float
    n: int
    groups: int
    level: float = LEVEL

    def points(self) -> str:
        """'61.3 [58.0, 64.5]' in percentage points."""
        return f"{100 * self.estimate:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n, "groups": self.groups}


@dataclass(frozen=True)
class Comparison:
    """A paired difference a - b of accuracies on the same n questions."""

    effect: float
    low: float
    high: float
    n: int
    groups: int
    a_only: int  # questions a answered right and b wrong
    b_only: int
    mcnemar_p: float
    detectable: float  # the smallest |difference| this design detects with 80 % power
    level: float = LEVEL

    def points(self) -> str:
        return f"{100 * self.effect:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("effect", "low", "high", "n", "groups", "a_only", "b_only", "mcnemar_p", "detectable")
        }


@dataclass(frozen=True)
class Verdict:
    verdict: str  # one of VERDICTS
    comparison: Comparison
    rule: str  # what was tested, in words

    def summary(self) -> str:
        c = self.comparison
        if c.low == c.high == 0 and c.a_only == c.b_only == 0:  # the two scored alike on every question
            return (
                f"{self.verdict}: {c.points()} points ({c.n} paired questions; the two scored alike on every "
                f"question, so this design cannot tell them apart)"
            )
        # McNemar only where the comparison is question by question (a difference of gains is not)
        mcnemar = f"McNemar p = {c.mcnemar_p:.3g}; " if c.a_only + c.b_only else ""
        return (
            f"{self.verdict}: {c.points()} points ({c.level:.0%} interval, {c.n} paired questions in "
            f"{c.groups} groups; {mcnemar}smallest detectable {100 * c.detectable:.1f})"
        )


def _group_sums(values: np.ndarray, groups: Sequence[Hashable] | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-group (sum of values, count), groups in first-seen order (each question its own group
    when `groups` is None)."""
    if groups is None:
        return values.astype(float), np.ones(len(values))
    if len(groups) != len(values):
        raise ValueError(f"{len(values)} values but {len(groups)} group labels")
    index: dict[Hashable, int] = {}
    codes = np.fromiter((index.setdefault(g, len(index)) for g in groups), dtype=np.int64, count=len(groups))
    return np.bincount(codes, weights=values, minlength=len(index)), np.bincount(codes, minlength=len(index))


def _bootstrap_ratios(sums: np.ndarray, counts: np.ndarray, resamples: int, seed: int, chunk: int = 250) -> np.ndarray:
    """`resamples` ratios sum/count, each over groups drawn with replacement (memory: chunk x groups)."""
    rng = np.random.default_rng(seed)
    k = len(sums)
    out = np.empty(resamples)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = rng.multinomial(k, np.full(k, 1 / k), size=size)
        out[start : start + size] = (weights @ sums) / np.maximum(weights @ counts, 1)
    return out


def _as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError("need a non-empty 1-D sequence of per-question scores")
    return array


def accuracy_interval(
    correct: Sequence[float],
    groups: Sequence[Hashable] | None = None,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Mean of per-question scores (1/0, or partial credit) with a percentile bootstrap interval,
    resampling whole groups."""
    values = _as_array(correct)
    sums, counts = _group_sums(values, groups)
    ratios = _bootstrap_ratios(sums, counts, resamples, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return Interval(float(values.mean()), float(low), float(high), len(values), len(sums), level)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar test: under no difference, each discordant question is a fair coin."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    return float(scipy_stats.binomtest(a_only, discordant, 0.5).pvalue)


def detectable_difference(standard_error: float, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at `level` detects with probability `power`."""
    return (scipy_stats.norm.ppf(1 - (1 - level) / 2) + scipy_stats.norm.ppf(power)) * standard_error


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    groups: Sequence[Hashable] | None = None,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Accuracy of a minus accuracy of b on the same questions (same order), with a paired bootstrap
    interval over groups and an exact McNemar test on the discordant questions."""
    a_values, b_values = _as_array(a), _as_array(b)
    if len(a_values) != len(b_values):
        raise ValueError(f"a paired comparison needs the same questions: {len(a_values)} vs {len(b_values)} scores")
    diff = a_values - b_values
    sums, counts = _group_sums(diff, groups)
    ratios = _bootstrap_ratios(sums, counts, resamples, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    a_only = int(np.sum((a_values > 0.5) & (b_values <= 0.5)))
    b_only = int(np.sum((b_values > 0.5) & (a_values <= 0.5)))
    return Comparison(
        effect=float(diff.mean()),
        low=float(low),
        high=float(high),
        n=len(diff),
        groups=len(sums),
        a_only=a_only,
        b_only=b_only,
        mcnemar_p=mcnemar_exact(a_only, b_only),
        detectable=detectable_difference(float(ratios.std(ddof=1)), level),
        level=level,
    )


def direction(comparison: Comparison, expected: int = 1) -> Verdict:
    """Did a differ from b in the `expected` direction (+1: a > b, -1: a < b)?"""
    if expected not in (1, -1):
        raise ValueError("expected is +1 (a better) or -1 (a worse)")
    if comparison.low > 0 or comparison.high < 0:
        sign = 1 if comparison.low > 0 else -1
        verdict = "reproduced" if sign == expected else "contradicted"
    else:
        verdict = "inconclusive"
    rule = "a > b" if expected == 1 else "a < b"
    return Verdict(verdict, comparison, f"{rule}: the {comparison.level:.0%} interval of a - b excludes 0")


def non_inferiority(comparison: Comparison, margin: float) -> Verdict:
    """Is a no worse than b by more than `margin` (a share, fixed before the run)? Reproduced when the
    whole interval of a - b lies above -margin, contradicted when it lies below, else inconclusive."""
    if margin < 0:
        raise ValueError("the non-inferiority margin is a non-negative share")
    if comparison.low > -margin:
        verdict = "reproduced"
    elif comparison.high < -margin:
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    return Verdict(verdict, comparison, f"a >= b - {100 * margin:g} points: the interval of a - b vs -{100 * margin:g}")


@dataclass(frozen=True)
class SeedSummary:
    """One figure across independent seeds: mean, sample s.d. and a t-interval for the mean."""

    mean: float
    sd: float
    low: float
    high: float
    seeds: int
    level: float = LEVEL

    def points(self) -> str:
        if self.seeds < 2:
            return f"{100 * self.mean:.1f} (1 seed)"
        return f"{100 * self.mean:.1f} ± {100 * self.sd:.1f} [{100 * self.low:.1f}, {100 * self.high:.1f}]"


def across_seeds(values: Sequence[float], level: float = LEVEL) -> SeedSummary:
    array = _as_array(values)
    mean = float(array.mean())
    if len(array) < 2:
        return SeedSummary(mean, float("nan"), float("nan"), float("nan"), 1, level)
    sd = float(array.std(ddof=1))
    half = scipy_stats.t.ppf(1 - (1 - level) / 2, len(array) - 1) * sd / math.sqrt(len(array))
    return SeedSummary(mean, sd, mean - half, mean + half, len(array), level)


def budget_needed(curve: dict[int, float], floor: float, share: float = 0.9) -> int | None:
    """The smallest budget m whose accuracy reaches `share` of the gain the largest budget makes above
    `floor` (the same questions answered without the image); None when the largest budget is not
    above the floor."""
    if not curve:
        raise ValueError("an empty curve")
    top = curve[max(curve)]
    if top <= floor:
        return None
    target = floor + share * (top - floor)
    return min(m for m, accuracy in curve.items() if accuracy >= target)


def combine_seeds(comparisons: Sequence[Comparison], level: float = LEVEL, power: float = POWER) -> Comparison:
    """One paired comparison per training seed (each on the same questions) -> the effect across
    seeds: mean of the seeds' effects with a t-interval, which holds training noise as well as
    question noise. With one seed this is that seed's comparison (question noise only)."""
    if not comparisons:
        raise ValueError("no comparisons to combine")
    if len(comparisons) == 1:
        return comparisons[0]
    effects = [c.effect for c in comparisons]
    summary = across_seeds(effects, level)
    dof = len(effects) - 1
    detectable = (
        (scipy_stats.t.ppf(1 - (1 - level) / 2, dof) + scipy_stats.t.ppf(power, dof))
        * summary.sd
        / math.sqrt(len(effects))
    )
    a_only, b_only = sum(c.a_only for c in comparisons), sum(c.b_only for c in comparisons)
    return Comparison(
        effect=summary.mean,
        low=summary.low,
        high=summary.high,
        n=sum(c.n for c in comparisons),
        groups=max(c.groups for c in comparisons),
        a_only=a_only,
        b_only=b_only,
        mcnemar_p=mcnemar_exact(a_only, b_only),
        detectable=detectable,
        level=level,
    )


def difference_of_means(
    values: Sequence[float],
    in_a: Sequence[bool],
    groups: Sequence[Hashable],
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """mean(values | in_a) - mean(values | not in_a), with a bootstrap interval resampling groups
    (both subsets share groups: e.g. fine- and coarse-grained questions about the same scenes)."""
    array, mask = _as_array(values), np.asarray(in_a, dtype=bool)
    if not mask.any() or mask.all():
        raise ValueError("both subsets need questions")
    sums_a, counts_a = _group_sums(np.where(mask, array, 0.0), groups)[0], _group_sums(mask.astype(float), groups)[0]
    sums_b, counts_b = _group_sums(np.where(mask, 0.0, array), groups)[0], _group_sums((~mask).astype(float), groups)[0]
    rng = np.random.default_rng(seed)
    k, out = len(sums_a), []
    for start in range(0, resamples, 250):
        weights = rng.multinomial(k, np.full(k, 1 / k), size=min(250, resamples - start))
        out.append(
            (weights @ sums_a) / np.maximum(weights @ counts_a, 1)
            - (weights @ sums_b) / np.maximum(weights @ counts_b, 1)
        )
    draws = np.concatenate(out)
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    estimate = float(array[mask].mean() - array[~mask].mean())
    return estimate, float(low), float(high)


def bootstrap_statistic(
    groups: Sequence[Sequence],
    statistic: Callable[[list[tuple[int, object]]], float | None],
    level: float = LEVEL,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float] | None:
    """A percentile interval for any statistic of grouped items (a benchmark's own score over its
    samples, grouped by image): each resample draws groups with replacement and hands `statistic`
    (copy index, item) pairs, so a group drawn twice can be told apart. None when the statistic
    is undefined on every resample."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(groups), size=len(groups))
        value = statistic([(copy, item) for copy, g in enumerate(drawn) for item in groups[g]])
        if value is not None:
            values.append(value)
    if not values:
        return None
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)
