"""The paper's claims, checked against an ablation's trials; each is "reproduced", "not reproduced"
(with the numbers) or "not tested" (saying which variant or measurement the grid lacks).

1. Tokens are nested: the first m of M visual tokens are the tokens at budget m (checked on every
   trial's export, exact up to float rounding).
2. Accuracy rises with m and levels off (a turning point below M); fine-grained questions (count,
   position, ...) gain more from m than coarse ones (colour, existence) — the held-out questions by kind.
3. One elastic model is close to (within `tolerance` points) or better than models trained at one
   fixed m, at their own m.
4. Table 2's directions at m = M: linear > log schedule, attention→projection > projection→attention,
   elastic stage 1 hurts.
5. A budget no training step drew (e.g. an odd m with an even schedule) scores between its
   neighbours.
6. Content-aware keys vs the official position-only keys (a comparison: which is better, by how much).

Scores are the normalised average over benchmarks (% of each headline's maximum), mean over seeds;
a difference counts when it exceeds `tolerance` points.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from mqt_llava.ablation.report import AVERAGE, Trial, at, cell, groups
from mqt_llava.toy.world import COARSE_KINDS, FINE_KINDS


@dataclass
class Claim:
    number: int
    statement: str
    verdict: str  # "reproduced", "not reproduced", "not tested"
    evidence: str


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def nested(trials: list[Trial], atol: float = 1e-5) -> Claim:
    statement = "tokens are nested: the first m of the M tokens are the tokens at m"
    exports = [t.stage2_export for t in trials if t.stage2_export]
    if not exports:
        return Claim(1, statement, "not tested", "no trial export recorded")
    from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration

    worst, checked = 0.0, 0
    for path in exports:
        model = MQTLlavaForConditionalGeneration.from_pretrained(path).eval()
        connector, width = model.connector, model.config.vision_config.hidden_size
        grid = torch.randn(2, 64, width, generator=torch.Generator().manual_seed(0))  # any square grid
        with torch.no_grad():
            full = connector(grid)
            for m in range(1, connector.max_tokens + 1):
                worst = max(worst, float((connector(grid, m) - full[:, :m]).abs().max()))
                checked += 1
    verdict = "reproduced" if worst <= atol else "not reproduced"
    return Claim(1, statement, verdict, f"{len(exports)} exports, every m in 1..M ({checked} checks): largest "
                                        f"difference {worst:.1e} (float rounding; tolerance {atol:g})")  # fmt: skip


def rises_with_m(trials: list[Trial], tolerance: float) -> Claim:
    statement = "accuracy rises with m and levels off; fine-grained questions gain more than coarse ones"
    baseline = groups(trials).get("baseline")
    if not baseline or not any(t.kinds for t in baseline):
        return Claim(2, statement, "not tested", "the baseline has no held-out questions by kind (eval.heldout_corpus)")
    budgets = sorted({m for t in baseline for m in t.kinds})
    low, high = budgets[0], budgets[-1]

    def kind_mean(kinds: tuple[str, ...], m: int) -> list[float]:
        return [100 * mean([t.kinds[m][k] for k in kinds if k in t.kinds[m]]) for t in baseline if m in t.kinds]

    overall = {m: mean([100 * t.kinds[m]["all"] for t in baseline if m in t.kinds]) for m in budgets}
    best = max(overall.values())
    turning = min(m for m in budgets if overall[m] >= best - tolerance)
    rises = overall[high] - overall[low] > tolerance
    fine_gain = [f - f0 for f, f0 in zip(kind_mean(FINE_KINDS, high), kind_mean(FINE_KINDS, low), strict=True)]
    coarse_gain = [c - c0 for c, c0 in zip(kind_mean(COARSE_KINDS, high), kind_mean(COARSE_KINDS, low), strict=True)]
    fine_more = mean(fine_gain) - mean(coarse_gain) > tolerance
    curve = ", ".join(f"{m}: {v:.1f}" for m, v in overall.items())
    evidence = (f"held-out exact match (%) by m: {curve}; levels off (within {tolerance:g} of the best) from "
                f"m = {turning}; gain from m = {low} to {high}: fine-grained {cell(fine_gain)}, coarse "
                f"{cell(coarse_gain)} points")  # fmt: skip
    verdict = "reproduced" if rises and turning < high and fine_more else "not reproduced"
    return Claim(2, statement, verdict, evidence)


def elastic_vs_fixed(trials: list[Trial], tolerance: float) -> Claim:
    statement = f"one elastic model is within {tolerance:g} points of, or better than, fixed-m models at their m"
    by_group = groups(trials)
    baseline = by_group.get("baseline")
    fixed = [ts for ts in by_group.values() if ts[0].variant.get("fixed_tokens") is not None]
    if not baseline or not fixed:
        return Claim(3, statement, "not tested", "the grid has no fixed_budgets variants")
    rows, ok = [], True
    for members in sorted(fixed, key=lambda ts: ts[0].variant["fixed_tokens"]):
        m = members[0].variant["fixed_tokens"]
        elastic, alone = at(baseline, AVERAGE, m), at(members, AVERAGE, m)
        ok &= mean(elastic) >= mean(alone) - tolerance
        rows.append(f"m = {m}: elastic {cell(elastic)} vs fixed {cell(alone)}")
    return Claim(3, statement, "reproduced" if ok else "not reproduced", "; ".join(rows))


DIRECTIONS = (  # (the variant the paper found worse, what the baseline is better at)
    ("log-schedule", "linear > log schedule"),
    ("proj-attn", "attention→projection > projection→attention"),
    ("elastic-stage1-on", "elastic stage 1 hurts"),
)


def table2_directions(trials: list[Trial], tolerance: float) -> list[Claim]:
    by_group = groups(trials)
    baseline = by_group.get("baseline")
    claims = []
    for variant, statement in DIRECTIONS:
        members = by_group.get(variant)
        if not baseline or not members:
            claims.append(Claim(4, statement, "not tested", f"the grid has no {variant} variant"))
            continue
        base, other = at(baseline, AVERAGE, None), at(members, AVERAGE, None)
        margin = mean(base) - mean(other)
        verdict = "reproduced" if margin > tolerance else "not reproduced"
        note = "" if abs(margin) > tolerance else f" (a difference within {tolerance:g} points: does not count)"
        claims.append(Claim(4, statement, verdict, f"at m = M: baseline {cell(base)} vs {variant} {cell(other)}"
                                                   f"{note}"))  # fmt: skip
    return claims


def untrained_budget(trials: list[Trial], tolerance: float) -> Claim:
    statement = "a budget never drawn in training scores between its evaluated neighbours"
    baseline = groups(trials).get("baseline")
    if not baseline:
        return Claim(5, statement, "not tested", "no baseline variant")
    if baseline[0].schedule_support is None:
        return Claim(5, statement, "not tested", "the trials did not record their training schedule")
    drawn = set(baseline[0].schedule_support)
    budgets = sorted({m for t in baseline for m in t.curve(AVERAGE)})
    unseen = [m for i, m in enumerate(budgets) if m not in drawn and 0 < i < len(budgets) - 1]
    if not unseen:
        return Claim(5, statement, "not tested", f"no evaluated budget between two others lies outside the "
                                                 f"schedule's {sorted(drawn)}")  # fmt: skip
    rows, ok = [], True
    for m in unseen:
        i = budgets.index(m)
        below, here, above = (mean(at(baseline, AVERAGE, b)) for b in (budgets[i - 1], m, budgets[i + 1]))
        ok &= min(below, above) - tolerance <= here <= max(below, above) + tolerance
        rows.append(f"m = {budgets[i - 1]}: {below:.1f}, m = {m} (never drawn): {here:.1f}, "
                    f"m = {budgets[i + 1]}: {above:.1f}")  # fmt: skip
    return Claim(5, statement, "reproduced" if ok else "not reproduced", "; ".join(rows))


def keys(trials: list[Trial], tolerance: float) -> Claim:
    statement = "content-aware keys vs the official position-only keys"
    by_group = groups(trials)
    baseline, position = by_group.get("baseline"), by_group.get("position-keys")
    if not baseline or not position:
        return Claim(6, statement, "not tested", "the grid has no position-keys variant")
    if baseline[0].variant.get("keys") != "content_and_position":
        return Claim(6, statement, "not tested", "the baseline does not use content-aware keys")
    base, other = at(baseline, AVERAGE, None), at(position, AVERAGE, None)
    margin = mean(base) - mean(other)
    finding = ("content-aware better" if margin > tolerance else
               "position-only better" if margin < -tolerance else "no difference beyond the tolerance")  # fmt: skip
    return Claim(6, statement, "compared", f"{finding}: at m = M content-aware {cell(base)} vs position-only "
                                           f"{cell(other)}")  # fmt: skip


def check_claims(trials: list[Trial], tolerance: float = 1.0, check_nesting: bool = True) -> list[Claim]:
    claims = [nested(trials)] if check_nesting else []
    claims += [rises_with_m(trials, tolerance), elastic_vs_fixed(trials, tolerance)]
    claims += table2_directions(trials, tolerance)
    claims += [untrained_budget(trials, tolerance), keys(trials, tolerance)]
    return claims


def claims_markdown(claims: list[Claim]) -> str:
    lines = ["| # | claim | verdict | numbers |", "|---:|---|---|---|"]
    lines += [f"| {c.number} | {c.statement} | **{c.verdict}** | {c.evidence} |" for c in claims]
    return "\n".join(lines) + "\n"
