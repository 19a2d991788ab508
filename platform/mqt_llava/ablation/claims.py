"""The paper's claims, tested on an ablation's held-out questions with three-way verdicts.

Every comparison is paired: two models (or one model at two budgets) answered the same held-out
questions, and each trial kept every answer (`eval.heldout`). Per seed, the difference is a paired
bootstrap over scenes; across seeds, the seeds' differences give a t-interval, which carries the
training noise too (`eval.stats.combine_seeds`). A verdict is **reproduced** (the interval lies on
the paper's side), **contradicted** (on the other side) or **inconclusive** (it holds both), always
with the effect, its interval, the questions behind it and the smallest effect the design could
detect. "Within a margin" claims are non-inferiority tests whose margin is fixed in the spec.

1. Tokens are nested: the first m of M visual tokens are the tokens at budget m (exact check).
2. Accuracy rises with m (M against the smallest budget), and levels off: the smallest budget not
   worse than M by more than the margin.
3. Fine-grained questions gain more from m than whole-image ones (the gain's difference, resampled
   by scene); each kind's budget: the m that reaches 90 % of its gain above its no-image score.
4. One elastic model is no worse than models trained at one fixed m (QT-LLaVA: fixed m = M), at
   their m, within the margin.
5. Table 2's directions at m = M: linear > log schedule, attention→projection > projection→
   attention, elastic stage 1 hurts.
6. A budget no training step drew is no worse than the drawn budget below it, within the margin.
7. Content-aware keys vs the official position-only keys (a comparison, either way).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from mqt_llava.ablation.report import Trial, groups, heldout_budgets
from mqt_llava.eval import stats
from mqt_llava.eval.heldout import Gate, QuestionSet, majority_answers

NOT_TESTED = "not tested"
COMPARED = "compared"


@dataclass
class Claim:
    number: int
    statement: str
    verdict: str  # stats.VERDICTS, "not tested" or "compared"
    evidence: str
    comparison: stats.Comparison | None = None
    paper: str = ""  # the paper's own figure, for the summary table

    def effect(self) -> str:
        c = self.comparison
        return "–" if c is None else f"{c.points()}"


def seed_of(trial: Trial) -> int:
    return int(trial.variant.get("seed", 0))


def paired(a: list[Trial], b: list[Trial], m_a: int | None, m_b: int | None = None) -> stats.Comparison | None:
    """a at m_a minus b at m_b (None: each trial's M), seed by seed on the same questions, combined
    across the seeds both have."""
    b_by_seed = {seed_of(t): t for t in b}
    per_seed = []
    for trial in sorted(a, key=seed_of):
        other = b_by_seed.get(seed_of(trial))
        if other is None:
            continue
        x = trial.answers(trial.max_tokens if m_a is None else m_a)
        y = other.answers(other.max_tokens if m_b is None else m_b)
        if x is None or y is None or x.questions != y.questions:
            continue
        groups_ = [q.scene for q in x.questions]
        per_seed.append(stats.paired_difference(x.correct, y.correct, groups_, seed=seed_of(trial)))
    return stats.combine_seeds(per_seed) if per_seed else None


def seeds_phrase(members: list[Trial]) -> str:
    n = len({seed_of(t) for t in members})
    return f"{n} seeds (t-interval over seeds)" if n > 1 else "1 seed (question noise only)"


def verdict_claim(number: int, statement: str, verdict: stats.Verdict, context: str, paper: str = "") -> Claim:
    return Claim(number, statement, verdict.verdict, f"{context}: {verdict.summary()}", verdict.comparison, paper)


def nested(trials: list[Trial], atol: float = 1e-5) -> Claim:
    statement = "tokens are nested: the first m of the M tokens are the tokens at m"
    recorded = [t.stage2_export for t in trials if t.stage2_export]
    exports = [path for path in recorded if (Path(path) / "config.json").exists()]
    if not exports:
        return Claim(1, statement, NOT_TESTED, "no trial export found")
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
    verdict = "reproduced" if worst <= atol else "contradicted"
    missing = f" ({len(recorded) - len(exports)} recorded exports missing)" if len(recorded) > len(exports) else ""
    return Claim(
        1,
        statement,
        verdict,
        f"{len(exports)} exports{missing}, every m in 1..M ({checked} checks): largest "
        f"difference {worst:.1e} (float rounding; tolerance {atol:g})",
    )


TOO_FEW_BUDGETS = "the baseline kept held-out answers at fewer than two budgets"


def baseline_curve(trials: list[Trial]) -> tuple[list[Trial], list[int]]:
    """The baseline's trials and the budgets all of them kept held-out answers at."""
    baseline = groups(trials).get("baseline", [])
    return baseline, heldout_budgets(baseline)


def rises_and_levels_off(trials: list[Trial], margin: float) -> Claim:
    statement = "accuracy rises with m (m = M vs the smallest budget) and levels off below M"
    baseline, budgets = baseline_curve(trials)
    if len(budgets) < 2:
        return Claim(2, statement, NOT_TESTED, TOO_FEW_BUDGETS)
    low, top = budgets[0], budgets[-1]
    rise = stats.direction(paired(baseline, baseline, top, low), expected=1)
    plateau = None
    for m in budgets[:-1]:
        comparison = paired(baseline, baseline, m, top)
        if stats.non_inferiority(comparison, margin).verdict == "reproduced":
            plateau = (m, comparison)
            break
    levels = (
        f"levels off from m = {plateau[0]} ({plateau[1].points()} points vs M, within the "
        f"{100 * margin:g}-point margin)"
        if plateau
        else f"no budget below M is within {100 * margin:g} points of M (non-inferiority)"
    )
    claim = verdict_claim(
        2,
        statement,
        rise,
        f"baseline, m = {top} vs m = {low}, {seeds_phrase(baseline)}",
        "Table 1: average 49.0 (m = 2) to 59.4 (m = 256)",
    )
    claim.evidence += f"; {levels}"
    return claim


def fine_needs_more(trials: list[Trial], question_set: QuestionSet | None) -> Claim:
    statement = "fine-grained questions gain more from m than whole-image ones"
    baseline, budgets = baseline_curve(trials)
    if len(budgets) < 2:
        return Claim(3, statement, NOT_TESTED, TOO_FEW_BUDGETS)
    if question_set is None or not question_set.fine_kinds or not question_set.coarse_kinds:
        return Claim(3, statement, NOT_TESTED, "the question set does not divide its kinds into fine and whole-image")
    fine_kinds, coarse_kinds = question_set.fine_kinds, question_set.coarse_kinds
    low, top = budgets[0], budgets[-1]
    effects, needs = [], []
    for trial in baseline:
        at_low, at_top = trial.answers(low), trial.answers(top)
        gains = [b - a for a, b in zip(at_low.correct, at_top.correct, strict=True)]
        fine = [q.kind in fine_kinds for q in at_top.questions]
        effect, lo, hi = stats.difference_of_means(
            gains, fine, [q.scene for q in at_top.questions], seed=seed_of(trial)
        )
        se = (hi - lo) / (2 * 1.96)
        effects.append(
            stats.Comparison(
                effect,
                lo,
                hi,
                len(gains),
                len({q.scene for q in at_top.questions}),
                0,
                0,
                1.0,
                stats.detectable_difference(se),
            )
        )
        needs.append(kind_budgets(trial, budgets, question_set.kinds))
    combined = stats.combine_seeds(effects)
    verdict = stats.direction(combined, expected=1)
    per_kind = "; ".join(f"{k}: {', '.join(str(n.get(k, '–')) for n in needs)}" for k in question_set.kinds)
    context = (
        f"gain from m = {low} to {top}, fine-grained ({', '.join(fine_kinds)}) minus whole-image "
        f"({', '.join(coarse_kinds)}), {seeds_phrase(baseline)}"
    )
    claim = verdict_claim(3, statement, verdict, context, "Fig. 5: fine-detail tasks (VQAv2, GQA) need more tokens")
    claim.evidence += (
        f". The budget each kind needs (90 % of its gain above the blank-image score at M; "
        f"'above' only where the image helps; per seed): {per_kind}"
    )
    return claim


def kind_budgets(trial: Trial, budgets: list[int], kinds: tuple[str, ...]) -> dict[str, int | str]:
    """Per kind: the smallest budget reaching 90 % of its gain above the blank-image control at M, or
    'no gain' where the kind is not above its control (the interval of image - blank holds 0)."""
    top = budgets[-1]
    blank, runs = trial.answers(top, "blank"), {m: trial.answers(m) for m in budgets}
    if blank is None:
        return {}
    out: dict[str, int | str] = {}
    for kind in kinds:
        scores, scenes = runs[top].select(kind)
        floor, _ = blank.select(kind)
        if not scores:
            continue
        above = stats.direction(stats.paired_difference(scores, floor, scenes), expected=1)
        if above.verdict != "reproduced":
            out[kind] = "no gain"
            continue
        curve = {m: sum(run.select(kind)[0]) / len(scores) for m, run in runs.items()}
        out[kind] = stats.budget_needed(curve, sum(floor) / len(floor))
    return out


def elastic_vs_fixed(trials: list[Trial], margin: float) -> list[Claim]:
    statement = f"one elastic model is no worse than a model trained at one fixed m (margin {100 * margin:g} points)"
    by_group = groups(trials)
    baseline = by_group.get("baseline")
    fixed = [ts for ts in by_group.values() if ts[0].variant.get("fixed_tokens") is not None]
    if not baseline or not fixed:
        return [Claim(4, statement, NOT_TESTED, "the grid has no fixed_budgets variants")]
    claims = []
    for members in sorted(fixed, key=lambda ts: ts[0].variant["fixed_tokens"]):
        m = members[0].variant["fixed_tokens"]
        comparison = paired(baseline, members, m, m)
        name = "QT-LLaVA (fixed m = M)" if m == members[0].max_tokens else f"fixed m = {m}"
        if comparison is None:
            claims.append(Claim(4, f"{statement}: vs {name}", NOT_TESTED, f"no paired answers at m = {m}"))
            continue
        paper = "Table 1: MQT 59.4 vs QT-LLaVA 58.8 at 256 (+0.6)" if m == members[0].max_tokens else ""
        context = f"elastic baseline - {name} at m = {m}, {seeds_phrase(members)}"
        verdict = stats.non_inferiority(comparison, margin)
        claims.append(verdict_claim(4, f"{statement}: vs {name}", verdict, context, paper))
    return claims


DIRECTIONS = (  # (the variant the paper found worse, the claim, the paper's average difference)
    ("log-schedule", "linear > log schedule", "Table 2: -2.1 (57.3 vs 59.4)"),
    ("proj-attn", "attention→projection > projection→attention", "Table 2: -2.8 (56.6 vs 59.4)"),
    ("elastic-stage1-on", "elastic stage 1 hurts", "Table 2: -2.7 (56.7 vs 59.4)"),
)


def table2_directions(trials: list[Trial]) -> list[Claim]:
    by_group = groups(trials)
    baseline = by_group.get("baseline")
    claims = []
    for variant, statement, paper in DIRECTIONS:
        members = by_group.get(variant)
        comparison = paired(baseline, members, None) if baseline and members else None
        if comparison is None:
            claims.append(
                Claim(5, statement, NOT_TESTED, f"the grid has no {variant} variant with held-out answers", paper=paper)
            )
            continue
        claims.append(
            verdict_claim(
                5,
                statement,
                stats.direction(comparison, expected=1),
                f"baseline - {variant} at m = M, {seeds_phrase(members)}",
                paper,
            )
        )
    return claims


def untrained_budgets(trials: list[Trial], margin: float) -> list[Claim]:
    statement = f"a budget never drawn in training is no worse than the drawn one below it (margin {100 * margin:g})"
    claims = []
    for group, members in groups(trials).items():
        support = members[0].schedule_support
        if members[0].variant.get("fixed_tokens") is not None or support is None:
            continue
        budgets = heldout_budgets(members)
        for m in budgets:
            below = [b for b in budgets if b < m and b in support]
            if m in support or not below:
                continue
            comparison = paired(members, members, m, below[-1])
            context = f"{group}: m = {m} (never drawn) - m = {below[-1]}, {seeds_phrase(members)}"
            verdict = stats.non_inferiority(comparison, margin)
            claims.append(
                verdict_claim(
                    6, f"{statement}: {group} at m = {m}", verdict, context, "§4.2: m = 77, never drawn, works"
                )
            )
    return claims or [Claim(6, statement, NOT_TESTED, "no evaluated budget lies outside a schedule's draws")]


def keys(trials: list[Trial]) -> Claim:
    statement = "content-aware keys vs the official position-only keys"
    by_group = groups(trials)
    baseline, position = by_group.get("baseline"), by_group.get("position-keys")
    if not baseline or not position:
        return Claim(7, statement, NOT_TESTED, "the grid has no position-keys variant")
    comparison = paired(baseline, position, None)
    if comparison is None:
        return Claim(7, statement, NOT_TESTED, "no paired held-out answers")
    verdict = stats.direction(comparison, expected=1)
    finding = {
        "reproduced": "content-aware better",
        "contradicted": "position-only better",
        "inconclusive": "no detectable difference",
    }[verdict.verdict]
    return Claim(
        7,
        statement,
        COMPARED,
        f"{finding}: baseline - position-keys at m = M, {seeds_phrase(position)}: {verdict.summary()}",
        comparison,
    )


def check_claims(
    trials: list[Trial], margin: float = 0.02, check_nesting: bool = True, question_set: QuestionSet | None = None
) -> list[Claim]:
    """Every claim on the trials' kept held-out answers; `question_set`: the set they answered (its
    kinds for claim 3; without one, claim 3 is not tested)."""
    claims = [nested(trials)] if check_nesting else []
    claims += [rises_and_levels_off(trials, margin), fine_needs_more(trials, question_set)]
    claims += elastic_vs_fixed(trials, margin)
    claims += table2_directions(trials)
    claims += untrained_budgets(trials, margin)
    claims.append(keys(trials))
    return claims


def claims_markdown(claims: list[Claim]) -> str:
    lines = [
        "| # | claim | verdict | effect, points [95 % interval] | smallest detectable | paper |",
        "|---:|---|---|---:|---:|---|",
    ]
    for c in claims:
        detectable = "–" if c.comparison is None else f"{100 * c.comparison.detectable:.1f}"
        lines.append(f"| {c.number} | {c.statement} | **{c.verdict}** | {c.effect()} | {detectable} | {c.paper} |")
    lines += ["", *(f"{c.number}. {c.statement}: {c.evidence}" for c in claims)]
    return "\n".join(lines) + "\n"


def per_seed_markdown(
    trials: list[Trial],
    margin: float = 0.02,
    overall: list[Claim] | None = None,
    question_set: QuestionSet | None = None,
) -> str | None:
    """Each claim seed by seed (question noise only) beside its verdict over all seeds. A claim that
    one seed reproduces and another does not is not robust to the training seed; a t-interval over
    two or three seeds is too wide to show that on its own. None with fewer than two seeds.
    `overall`: check_claims over all trials when the caller has it already (not computed again)."""
    seeds = sorted({seed_of(t) for t in trials})
    if len(seeds) < 2:
        return None
    by_seed = {}
    for seed in seeds:
        claims = check_claims([t for t in trials if seed_of(t) == seed], margin, False, question_set)
        by_seed[seed] = {(c.number, c.statement): c for c in claims}
    lines = [
        "Seed by seed: each seed's paired difference on the held-out questions (question noise only), and "
        "how many of the seeds that could test a claim reproduce it.",
        "",
        f"| # | claim | {' | '.join(f'seed {s}' for s in seeds)} | seeds reproducing | all seeds |",
        "|---:|---|" + "---|" * len(seeds) + "---:|---|",
    ]
    for claim in [c for c in overall or check_claims(trials, margin, False, question_set) if c.number != 1]:
        cells = [by_seed[s].get((claim.number, claim.statement)) for s in seeds]
        tested = [c for c in cells if c is not None and c.comparison is not None]
        reproducing = sum(c.verdict == "reproduced" for c in tested)
        agree = "–" if claim.verdict == COMPARED or not tested else f"{reproducing} of {len(tested)}"
        lines.append(
            f"| {claim.number} | {claim.statement} | {' | '.join(map(seed_cell, cells))} | {agree} | "
            f"{seed_cell(claim)} |"
        )
    return "\n".join(lines) + "\n"


def seed_cell(claim: Claim | None) -> str:
    if claim is None:
        return "–"
    verdict = claim.evidence.split(":")[0] if claim.verdict == COMPARED else claim.verdict
    if verdict in ("reproduced", "contradicted"):
        verdict = f"**{verdict}**"
    return verdict if claim.comparison is None else f"{verdict} {claim.effect()}"


USES_IMAGE = {
    "reproduced": "uses the image",
    "contradicted": "worse with the image",
    "inconclusive": "**not shown to use the image**",
}


def controls_markdown(trials: list[Trial], question_set: QuestionSet | None = None) -> str | None:
    """Each variant at its M beside the controls that would expose it, on the same held-out
    questions: the answer prior (each kind's most common answer) and the same model with a blank
    image, image - blank paired per seed and combined across seeds. A variant whose interval holds 0
    is reported as not shown to use the image. Then the baseline's gates (the question set's), per
    seed. None when no trial kept its blank-image answers."""
    rows = []
    for group, members in groups(trials).items():
        per_seed, image, blank, questions = [], [], [], None
        for trial in sorted(members, key=seed_of):
            x, y = trial.answers(trial.max_tokens), trial.answers(trial.max_tokens, "blank")
            if x is None or y is None or x.questions != y.questions:
                continue
            scenes = [q.scene for q in x.questions]
            per_seed.append(stats.paired_difference(x.correct, y.correct, scenes, seed=seed_of(trial)))
            image.append(statistics.fmean(x.correct))
            blank.append(statistics.fmean(y.correct))
            questions = x.questions
        if not per_seed:
            continue
        verdict = stats.direction(stats.combine_seeds(per_seed), expected=1)
        prior = statistics.fmean(majority_answers(questions).correct)
        rows.append(
            f"| {group} | {len(per_seed)} | {len(questions)} | {100 * prior:.1f} | "
            f"{100 * statistics.fmean(blank):.1f} | {100 * statistics.fmean(image):.1f} | "
            f"{verdict.comparison.points()} | {USES_IMAGE[verdict.verdict]} |"
        )
    if not rows:
        return None
    lines = [
        "| variant | seeds | questions | answer prior | blank image | image | image - blank [95 %] | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
    ]
    gates = baseline_gates(trials, question_set) if question_set else {}
    if gates:
        lines += [
            "The baseline's gates (its question set's), per seed:",
            "",
            "| gate | threshold | " + " | ".join(f"seed {s}" for s in gates) + " | met |",
            "|---|---:|" + "---:|" * len(gates) + "---|",
        ]
        names = [name for name, *_ in next(iter(gates.values()))]
        for i, name in enumerate(names):
            figures = [g[i] for g in gates.values()]
            met = "yes" if all(passed for *_, passed in figures) else "**no**"
            seeds = " | ".join(f"{100 * figure:.1f}" for _, figure, _, _ in figures)
            lines.append(f"| {name} | {100 * figures[0][2]:g} | {seeds} | {met} |")
        lines.append("")
    return "\n".join(lines)


def baseline_gates(trials: list[Trial], question_set: QuestionSet) -> dict[int, list[Gate]]:
    """seed -> the question set's gates for the baseline's trials that kept answers at two budgets
    or more and a blank image at M (seeds without a gate left out)."""
    baseline, budgets = baseline_curve(trials)
    if len(budgets) < 2:
        return {}
    out = {}
    for trial in sorted(baseline, key=seed_of):
        low, top = budgets[0], trial.max_tokens
        first, x, y = trial.answers(low), trial.answers(top), trial.answers(top, "blank")
        if first is None or x is None or y is None:
            continue
        runs = {
            "majority": majority_answers(x.questions),
            f"m={low}/image": first,
            f"m={top}/image": x,
            f"m={top}/blank": y,
        }
        gates = question_set.gates(runs, [low, top])
        if gates:
            out[seed_of(trial)] = gates
    return out
