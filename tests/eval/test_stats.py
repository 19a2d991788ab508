"""The statistics on synthetic predictions whose truth is known: a real difference is detected in the
right direction, a null one is inconclusive, intervals cover at about their nominal rate, and
grouped resampling widens intervals when questions about one image move together."""

import numpy as np
import pytest

from mqt_llava.eval import stats


def questions(rng, groups: int, per_group: int, accuracy: float, spread: float = 0.0):
    """Per-question 0/1 scores in groups; `spread` > 0 gives each group its own accuracy (correlated
    questions, as several questions about one image are)."""
    group_p = np.clip(rng.normal(accuracy, spread, size=groups), 0, 1) if spread else np.full(groups, accuracy)
    correct = (rng.random((groups, per_group)) < group_p[:, None]).astype(float).ravel()
    labels = np.repeat(np.arange(groups), per_group)
    return correct, labels


def paired_models(rng, n: int, base: float, effect: float):
    """Two models' scores on the same n questions, correlated through a shared question difficulty:
    b is right with probability about `base`, a with about `base + effect` (each with its own noise,
    of the same distribution, so effect 0 is exactly no difference)."""
    difficulty = rng.random(n)
    b = (difficulty + rng.normal(0, 0.1, n) < base).astype(float)
    a = (difficulty + rng.normal(0, 0.1, n) < base + effect).astype(float)
    return a, b


def test_interval_contains_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = stats.accuracy_interval(questions(rng, 100, 1, 0.6)[0])
    large = stats.accuracy_interval(questions(rng, 4000, 1, 0.6)[0])
    for interval in (small, large):
        assert interval.low <= interval.estimate <= interval.high
    assert (large.high - large.low) < 0.4 * (small.high - small.low)  # width ~ 1/sqrt(n): 0.16 expected


@pytest.mark.parametrize("spread", [0.0, 0.3])
def test_interval_coverage_is_near_nominal(spread):
    """Over 200 independent experiments, the 95 % interval holds the true accuracy about 95 % of the
    time (binomial noise on 200 trials: 90-99 % covers chance), with or without within-group correlation."""
    rng = np.random.default_rng(1)
    truth, covered, trials = 0.7, 0, 200
    for trial in range(trials):
        correct, labels = questions(rng, 150, 4, truth, spread)
        interval = stats.accuracy_interval(correct, labels, resamples=600, seed=trial)
        true_here = truth if spread == 0 else None
        if true_here is None:  # the population mean of clipped normal group accuracies
            true_here = float(np.clip(np.random.default_rng(99).normal(truth, spread, 200_000), 0, 1).mean())
        covered += interval.low <= true_here <= interval.high
    assert 0.90 <= covered / trials <= 0.99


def test_grouped_resampling_widens_correlated_intervals():
    rng = np.random.default_rng(2)
    correct, labels = questions(rng, 200, 6, 0.6, spread=0.35)
    grouped = stats.accuracy_interval(correct, labels)
    naive = stats.accuracy_interval(correct)
    assert grouped.groups == 200 and naive.groups == 1200
    assert (grouped.high - grouped.low) > 1.5 * (naive.high - naive.low)


def test_a_real_difference_is_reproduced_and_its_reverse_contradicted():
    rng = np.random.default_rng(3)
    a, b = paired_models(rng, 4000, base=0.6, effect=0.05)
    comparison = stats.paired_difference(a, b)
    assert comparison.low > 0 and 0.02 < comparison.effect < 0.08
    assert comparison.mcnemar_p < 1e-3 and comparison.a_only > comparison.b_only
    assert stats.direction(comparison, expected=1).verdict == "reproduced"
    assert stats.direction(comparison, expected=-1).verdict == "contradicted"
    assert comparison.detectable < 0.05  # the design could see this effect


def test_a_null_difference_is_inconclusive_with_its_detectable_size():
    """Same model twice with independent noise: no difference. Across 100 experiments the verdict is
    "inconclusive" in about 95 % of them, never "reproduced" or "contradicted" in more than ~10 %."""
    rng = np.random.default_rng(4)
    verdicts = []
    for trial in range(100):
        a, b = paired_models(rng, 500, base=0.6, effect=0.0)
        verdicts.append(stats.direction(stats.paired_difference(a, b, resamples=600, seed=trial)).verdict)
    assert verdicts.count("inconclusive") >= 88
    comparison = stats.paired_difference(*paired_models(rng, 500, 0.6, 0.0))
    assert 0.02 < comparison.detectable < 0.08  # 500 questions cannot see a 1-point effect


def test_two_models_answering_alike_are_reported_as_indistinguishable_not_detectable_at_zero():
    scores = np.array([1.0, 0.0, 1.0, 1.0] * 50)
    verdict = stats.direction(stats.paired_difference(scores, scores.copy()))
    assert verdict.verdict == "inconclusive"
    assert "scored alike on every question" in verdict.summary() and "detectable" not in verdict.summary()
    always, never = np.ones(200), np.zeros(200)  # no variation either, but a difference on every question
    assert "scored alike" not in stats.direction(stats.paired_difference(always, never)).summary()


def test_paired_is_tighter_than_unpaired_when_models_agree_on_questions():
    rng = np.random.default_rng(5)
    a, b = paired_models(rng, 2000, base=0.6, effect=0.03)
    paired = stats.paired_difference(a, b)
    ia, ib = stats.accuracy_interval(a), stats.accuracy_interval(b)
    unpaired_width = 2 * np.hypot((ia.high - ia.low) / 2, (ib.high - ib.low) / 2)
    assert (paired.high - paired.low) < 0.7 * unpaired_width


def test_mcnemar_exact_values():
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert stats.mcnemar_exact(10, 0) == pytest.approx(2 * 0.5**10)  # two-sided exact binomial
    assert stats.mcnemar_exact(8, 2) == pytest.approx(0.109375)


def test_non_inferiority_three_ways():
    def comparison(low, high):
        return stats.Comparison((low + high) / 2, low, high, 1000, 1000, 10, 10, 1.0, 0.03)

    assert stats.non_inferiority(comparison(-0.015, 0.01), margin=0.02).verdict == "reproduced"
    assert stats.non_inferiority(comparison(-0.06, -0.03), margin=0.02).verdict == "contradicted"
    assert stats.non_inferiority(comparison(-0.04, 0.01), margin=0.02).verdict == "inconclusive"
    with pytest.raises(ValueError):
        stats.non_inferiority(comparison(0, 0), margin=-0.01)


def test_across_seeds_t_interval():
    summary = stats.across_seeds([0.60, 0.62, 0.64])
    assert summary.mean == pytest.approx(0.62) and summary.sd == pytest.approx(0.02)
    # t(0.975, 2) = 4.303: half-width 4.303 * 0.02 / sqrt(3)
    assert summary.high - summary.mean == pytest.approx(4.3027 * 0.02 / np.sqrt(3), rel=1e-3)
    single = stats.across_seeds([0.5])
    assert single.seeds == 1 and "1 seed" in single.points()


def test_budget_needed():
    curve = {1: 0.40, 4: 0.55, 16: 0.68, 32: 0.70}
    assert stats.budget_needed(curve, floor=0.40) == 16  # 90 % of the 30-point gain: 0.67
    assert stats.budget_needed(curve, floor=0.75) is None  # never above the no-image score
    assert stats.budget_needed({2: 0.5, 8: 0.9}, floor=0.1, share=0.5) == 2


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same questions"):
        stats.paired_difference([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="group labels"):
        stats.accuracy_interval([1, 0, 1], groups=["a", "b"])
    with pytest.raises(ValueError, match="non-empty"):
        stats.accuracy_interval([])


def test_same_seed_same_interval():
    correct, labels = questions(np.random.default_rng(6), 300, 3, 0.5)
    assert stats.accuracy_interval(correct, labels, seed=7) == stats.accuracy_interval(correct, labels, seed=7)


def test_combined_seeds_carry_training_noise():
    """Three seeds whose effects disagree: the combined interval is the t-interval of the seeds'
    effects, wider than any single seed's question-noise interval; one seed passes through."""
    rng = np.random.default_rng(8)
    per_seed = [stats.paired_difference(*paired_models(rng, 3000, 0.6, effect)) for effect in (0.0, 0.04, 0.08)]
    combined = stats.combine_seeds(per_seed)
    assert combined.effect == pytest.approx(np.mean([c.effect for c in per_seed]))
    assert (combined.high - combined.low) > 2 * max(c.high - c.low for c in per_seed)
    assert combined.n == sum(c.n for c in per_seed)
    assert stats.combine_seeds(per_seed[:1]) is per_seed[0]


def test_difference_of_means_between_subsets_of_the_same_scenes():
    rng = np.random.default_rng(9)
    groups = np.repeat(np.arange(500), 4)
    fine = np.tile([True, True, False, False], 500)
    gains = np.where(fine, rng.random(2000) < 0.3, rng.random(2000) < 0.1).astype(float)  # fine gain 20 points more
    estimate, low, high = stats.difference_of_means(gains, fine, groups)
    assert low < estimate < high and low > 0.1 and high < 0.3
    null = rng.random(2000) < 0.2
    _, low, high = stats.difference_of_means(null.astype(float), fine, groups)
    assert low < 0 < high
