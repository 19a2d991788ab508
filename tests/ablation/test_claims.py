"""The claims on synthetic held-out answers of known truth, written where real trials keep them:
a real effect in the paper's direction is reproduced, the opposite one contradicted, a null one
inconclusive, a non-inferior model passes its margin, and a missing variant is "not tested". The
questions' kinds and gates come from the question set the claims are given (the toy world's here)."""

import random

import pytest

from mqt_llava.ablation.claims import check_claims, claims_markdown
from mqt_llava.ablation.report import Trial
from mqt_llava.eval.heldout import Answers, Question, QuestionSet
from mqt_llava.model.builder import build_model
from mqt_llava.model.export import save_export
from mqt_llava.toy.heldout import QUESTIONS as TOY
from mqt_llava.toy.world import FINE_KINDS, KINDS
from small_model import small_spec

SCENES = 300
QUESTIONS = [Question(s, k, f"q{s}-{k}", "Yes", f"/img/{s}.png") for s in range(SCENES) for k in KINDS]
DIFFICULTY = [random.Random(i).random() for i in range(len(QUESTIONS))]  # shared: models agree on hard ones
SEEDS = (0, 1, 2)
MARGIN = 0.03


def write_answers(directory, m, accuracy, seed, control="image"):
    """Question i is right when its difficulty is below the accuracy for its kind (a dict) or for all
    (a number); each seed flips 3 % of answers at random (training noise)."""
    rng = random.Random(f"{directory.name}/{m}/{control}/{seed}")  # not the path: tmp_path varies
    predictions = []
    for q, d in zip(QUESTIONS, DIFFICULTY, strict=True):
        p = accuracy[q.kind] if isinstance(accuracy, dict) else accuracy
        right = (d < p) != (rng.random() < 0.03)
        predictions.append("Yes" if right else "No")
    Answers(QUESTIONS, predictions).save(directory / "heldout" / f"m{m}-{control}.jsonl")


def make_trial(root, label, variant, curve, blank=0.4, support=(2, 4, 8, 16, 32)):
    """One trial per seed; `curve`: m -> accuracy (a number or per-kind dict)."""
    trials = []
    for seed in SEEDS:
        directory = root / f"{label}-seed{seed}"
        for m, accuracy in curve.items():
            write_answers(directory, m, accuracy, seed)
        write_answers(directory, max(curve), blank, seed, "blank")
        trials.append(
            Trial(
                f"{label}/seed{seed}",
                variant | {"seed": seed},
                32,
                [],
                str(directory / "export"),
                {m: {} for m in curve},
                list(support),
            )
        )
    return trials


def per_kind(fine, coarse):
    return {k: fine if k in FINE_KINDS else coarse for k in KINDS}


RISING = {
    2: per_kind(0.30, 0.70),
    4: per_kind(0.45, 0.72),
    7: per_kind(0.58, 0.73),
    8: per_kind(0.60, 0.73),
    16: per_kind(0.70, 0.74),
    32: per_kind(0.70, 0.74),
}


def at_top(curve, shift):
    return {m: ({k: v + shift for k, v in acc.items()} if m == 32 else acc) for m, acc in curve.items()}


def by_statement(claims):
    return {c.statement.split(":")[0] if c.number in (4, 6) else c.statement: c for c in claims}


@pytest.fixture(scope="module")
def paper_like_grid(tmp_path_factory):
    """Six variants, three seeds each: written once for the module (the tests only read it)."""
    tmp_path = tmp_path_factory.mktemp("grid")
    save_export(build_model(small_spec()), tmp_path / "baseline-seed0" / "export")  # the nesting check loads it
    return [
        *make_trial(tmp_path, "baseline", {"keys": "content_and_position"}, RISING),
        *make_trial(tmp_path, "log-schedule", {"schedule": "log"}, at_top(RISING, -0.08)),  # 8 points worse
        *make_trial(tmp_path, "proj-attn", {}, RISING),  # no difference
        *make_trial(tmp_path, "elastic-stage1-on", {}, at_top(RISING, +0.08)),  # better: against the paper
        *make_trial(tmp_path, "position-keys", {"keys": "position_only"}, RISING),
        *make_trial(tmp_path, "fixed-m32", {"schedule": "fixed", "fixed_tokens": 32}, {32: RISING[32]}),
    ]


def test_verdicts_follow_the_truth_in_three_ways(paper_like_grid):
    claims = check_claims(paper_like_grid, margin=MARGIN, question_set=TOY)
    got = by_statement(claims)
    assert got["tokens are nested: the first m of the M tokens are the tokens at m"].verdict == "reproduced"
    assert got["accuracy rises with m (m = M vs the smallest budget) and levels off below M"].verdict == "reproduced"
    assert (
        "levels off from m = 16"
        in got["accuracy rises with m (m = M vs the smallest budget) and levels off below M"].evidence
    )
    fine = got["fine-grained questions gain more from m than whole-image ones"]
    assert fine.verdict == "reproduced" and 0.3 < fine.comparison.effect < 0.45  # 40 vs 4 points of gain
    needs = dict(part.split(": ") for part in fine.evidence.rsplit("per seed): ", 1)[1].split("; "))
    needs = {kind: [int(m) for m in seeds.split(", ")] for kind, seeds in needs.items()}  # kind -> per seed
    assert set(needs) == set(KINDS)
    assert all(max(needs[k]) <= 8 for k in ("existence", "count"))  # coarse: 0.70 at m = 2, 0.73 from 7 (target 0.706)
    assert all(min(needs[k]) >= 16 for k in FINE_KINDS)  # fine: 0.70 from 16 on (target 0.67)
    assert got["linear > log schedule"].verdict == "reproduced"
    assert abs(got["linear > log schedule"].comparison.effect - 0.08 * 5 / 7) < 0.02  # fine kinds only moved
    assert got["attention→projection > projection→attention"].verdict == "inconclusive"
    assert got["elastic stage 1 hurts"].verdict == "contradicted"
    elastic = got["one elastic model is no worse than a model trained at one fixed m (margin 3 points)"]
    assert elastic.verdict == "reproduced" and "QT-LLaVA" in elastic.statement
    unseen = got["a budget never drawn in training is no worse than the drawn one below it (margin 3)"]
    assert unseen.verdict == "reproduced" and "m = 7" in unseen.statement
    keys = got["content-aware keys vs the official position-only keys"]
    assert keys.verdict == "compared" and "no detectable difference" in keys.evidence
    for claim in claims:
        if claim.comparison is not None:
            assert claim.comparison.n == len(SEEDS) * len(QUESTIONS) or claim.number == 3
            assert "3 seeds (t-interval over seeds)" in claim.evidence or claim.number == 1

    text = claims_markdown(claims)
    assert "| 5 | linear > log schedule | **reproduced** |" in text and "Table 2: -2.1" in text


def test_a_fixed_model_clearly_better_contradicts_non_inferiority_and_a_missing_variant_is_not_tested(tmp_path):
    grid = [
        *make_trial(tmp_path, "baseline", {}, {2: 0.5, 32: 0.6}),
        *make_trial(tmp_path, "fixed-m32", {"schedule": "fixed", "fixed_tokens": 32}, {32: 0.75}),
    ]
    got = by_statement(check_claims(grid, margin=MARGIN, check_nesting=False))
    assert got["one elastic model is no worse than a model trained at one fixed m (margin 3 points)"].verdict == (
        "contradicted"
    )
    missing = got["attention→projection > projection→attention"]
    assert missing.verdict == "not tested" and "no proj-attn variant" in missing.evidence


def test_one_seed_is_said_to_carry_question_noise_only(tmp_path):
    grid = [t for t in make_trial(tmp_path, "baseline", {}, {2: 0.5, 32: 0.6}) if t.variant["seed"] == 0]
    (rise,) = [c for c in check_claims(grid, check_nesting=False) if c.number == 2]
    assert rise.verdict == "reproduced" and "1 seed (question noise only)" in rise.evidence


def test_the_report_draws_held_out_curves_with_bands(paper_like_grid, tmp_path):
    from mqt_llava.ablation.report import heldout_curves, write_report

    baseline = [t for t in paper_like_grid if t.group == "baseline"]
    curve = heldout_curves(baseline)["all"]
    assert sorted(curve) == [2, 4, 7, 8, 16, 32]
    assert all(low <= mean <= high for mean, low, high in curve.values())  # a t-interval over 3 seeds
    # Two variants are enough to draw: the report's plots cost a bootstrap per kind, budget and trial (the
    # whole grid's took ~40 s); the verdicts over the whole grid are the test above.
    drawn = [t for t in paper_like_grid if t.group in ("baseline", "log-schedule")]
    claims = claims_markdown(check_claims(drawn, question_set=TOY))
    report = write_report(drawn, tmp_path / "report", claims=claims, kinds=TOY.kinds)
    assert (tmp_path / "report" / "heldout_variants.png").exists() and (
        tmp_path / "report" / "heldout_kinds.png"
    ).exists()
    assert "![heldout_kinds](heldout_kinds.png)" in report.read_text()


def test_each_variant_is_shown_beside_its_controls_and_one_that_ignores_the_image_is_named(tmp_path):
    from mqt_llava.ablation.claims import controls_markdown

    grid = [
        *make_trial(tmp_path, "baseline", {}, RISING, blank=0.4),
        *make_trial(tmp_path, "blind", {}, {2: 0.6, 32: 0.6}, blank=0.6),  # answers alike without its image
    ]
    text = controls_markdown(grid, TOY)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["baseline"].endswith("| uses the image |") and "| 3 | 2100 |" in rows["baseline"]
    assert rows["blind"].endswith("| **not shown to use the image** |")
    gates = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if "at M" in line}
    # RISING at m = 32: existence (coarse) 0.74 < 0.75 in every seed; position (fine) 0.70 >= 0.30
    assert gates["existence at M"].endswith("| **no** |") and gates["position at M"].endswith("| yes |")
    assert "| seed 0 | seed 1 | seed 2 |" in text
    assert controls_markdown([Trial("x/seed0", {"seed": 0}, 32, [], None)]) is None  # nothing kept: no section


def test_a_claim_one_seed_does_not_repeat_is_shown_seed_by_seed(tmp_path):
    from mqt_llava.ablation.claims import per_seed_markdown

    rising = make_trial(tmp_path, "baseline", {}, {2: 0.5, 32: 0.6})
    flat = make_trial(tmp_path / "flat", "baseline", {}, {2: 0.55, 32: 0.55})
    grid = [*rising[:2], flat[2], *make_trial(tmp_path, "log-schedule", {"schedule": "log"}, {2: 0.5, 32: 0.45})]
    text = per_seed_markdown(grid, MARGIN)
    rows = {line.split(" | ")[1]: line.split(" | ")[2:] for line in text.splitlines() if line.startswith("| ")}
    rise = rows["accuracy rises with m (m = M vs the smallest budget) and levels off below M"]
    assert [cell.split(" ")[0] for cell in rise[:3]] == ["**reproduced**", "**reproduced**", "inconclusive"]
    assert rise[3] == "2 of 3"  # the seeds that reproduce it, of those that could test it
    schedule = rows["linear > log schedule"]
    assert schedule[3] == "3 of 3" and schedule[4].startswith("**reproduced** +")  # the t-interval over seeds
    assert rows["content-aware keys vs the official position-only keys"][3] == "–"  # not tested: no such variant
    assert per_seed_markdown(rising[:1]) is None  # one seed: the claims table says it all


def test_claims_take_kinds_and_gates_from_the_question_set_they_are_given(tmp_path):
    from mqt_llava.ablation.claims import controls_markdown

    grid = make_trial(tmp_path, "baseline", {}, RISING)

    def fine_claim(question_set):
        return by_statement(check_claims(grid, MARGIN, False, question_set))[
            "fine-grained questions gain more from m than whole-image ones"
        ]

    undivided = QuestionSet("undivided", KINDS, TOY.questions)  # no fine kinds, no gates
    for question_set in (None, undivided):
        assert fine_claim(question_set).verdict == "not tested"
    position = fine_claim(QuestionSet("position only", ("position", "existence"), TOY.questions, ("position",)))
    assert position.verdict == "reproduced" and "fine-grained (position) minus whole-image (existence)" in (
        position.evidence
    )
    needs = position.evidence.rsplit("per seed): ", 1)[1].split("; ")
    assert [part.split(":")[0] for part in needs] == ["position", "existence"]  # its kinds only, in its order
    assert "gates" not in controls_markdown(grid, undivided) and "gates" in controls_markdown(grid, TOY)
