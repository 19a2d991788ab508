import csv

import pytest

from mqt_llava.eval.benchmarks import Sample
from mqt_llava.eval.report import advise, normalised_average, table, write_report
from mqt_llava.eval.runner import PairResult, spread


def results():
    out = []
    for m, (pope, mme) in {2: (70.0, 500.0), 8: (79.5, 700.0), 32: (80.0, 690.0)}.items():
        out.append(PairResult("pope", m, "scored", {"f1": pope, "accuracy": pope - 1}, 100))
        out.append(PairResult("mme", m, "scored", {"perception": mme, "perception_max": 800.0}, 80, rejected=1))
        out.append(PairResult("mmvet", m, "skipped", reason="needs a judge model"))
    return out


def test_table_is_shaped_like_the_papers_table_1():
    text = table(results())
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    # Table 1's columns in its order, MME as perception and cognition; the average is labelled as partial
    assert header == ["# tokens", "POPE", "MME-P", "MME-C", "MM-Vet", "Avg of the scored columns (not the paper's 11)"]
    row8 = [c.strip() for c in lines[3].strip("|").split("|")]
    # the average: POPE 79.5 of 100 and MME 700 of 800 (4 subtasks present) -> (79.5 + 87.5) / 2
    assert row8 == ["8", "79.5", "700.0", "–", "skipped", "83.5"]
    assert "MM-Vet: skipped (needs a judge model)" in text


def test_with_every_column_the_average_is_the_papers():
    """LLaVA-1.5's row of the paper's Table 1 gives its Avg, 59.2; TextVQA goes to a table of its own."""
    paper = {
        "vizwiz": {"accuracy": 50.0},
        "scienceqa": {"accuracy": 66.8},
        "vqav2": {"accuracy": 78.5},
        "gqa": {"accuracy": 62.0},
        "pope": {"f1": 85.9},
        "mme": {"perception": 1510.7, "cognition": 316.1},
        "mmmu": {"accuracy": 34.7},
        "mmbench": {"accuracy": 64.3},
        "llava_bench": {"relative_score": 63.4},
        "mmvet": {"score": 30.5},
        "textvqa": {"accuracy": 58.2},
    }
    row = [PairResult(name, 576, "scored", scores, 100) for name, scores in paper.items()]
    assert normalised_average(row) == pytest.approx(59.2, abs=0.05)
    text = table(row)
    assert text.splitlines()[0].endswith("| MMB | LLaVA-W | MM-Vet | Avg |") and "| 576 | 50.0 | 66.8 |" in text
    assert "Beyond the paper's Table 1" in text and "| 576 | 58.2 |" in text


def test_normalised_average_ignores_skipped_and_uses_each_maximum():
    row = [r for r in results() if r.budget == 2]
    assert normalised_average(row) == pytest.approx((70 + 500 / 8) / 2)


def test_advisor_picks_the_smallest_budget_within_the_tolerance():
    advice = advise(results(), points=1.0)
    assert advice["pope"] == {
        "best": 80.0,
        "best_budget": 32,
        "advised_budget": 8,
        "advised_score": 79.5,
        "points": 1.0,
        "title": "POPE",
    }
    assert advise(results(), points=0.1)["pope"]["advised_budget"] == 32
    assert advise(results(), points=15)["mme"]["advised_budget"] == 8  # best 700 at m=8; 500 is 200 below
    assert "mmvet" not in advice


def test_report_files(tmp_path):
    paths = write_report(results(), tmp_path, points=1.0)
    rows = list(csv.DictReader(paths["results"].open()))
    pope8 = [r for r in rows if (r["benchmark"], r["budget"], r["metric"]) == ("pope", "8", "f1")]
    assert len(pope8) == 1 and pope8[0]["value"] == "79.5000" and pope8[0]["status"] == "scored"
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert len(skipped) == 3 and skipped[0]["reason"] == "needs a judge model" and skipped[0]["value"] == ""
    assert sorted(p.name for p in paths["plots"].iterdir()) == [
        "all_benchmarks.png",
        "all_benchmarks_linear.png",
        "mme.png",
        "pope.png",
    ]
    assert (paths["plots"] / "pope.png").read_bytes()[:4] == b"\x89PNG"
    assert "| POPE | 80.0 | 32 | 8 | 79.5 |" in paths["advisor"].read_text()


def test_a_limited_sweep_keeps_each_splits_and_answers_share_and_units_whole():
    # POPE-like: per image, its "yes" questions and then its "no" ones, in three splits.
    samples = [
        Sample(f"{g}/{i}/{q}", "q", None, "yes" if q < 3 else "no", g)
        for g in ("random", "popular", "adversarial")
        for i in range(100)
        for q in range(6)
    ]
    chosen = spread(samples, 300)
    assert len(chosen) == 300 and chosen == sorted(chosen, key=samples.index)  # file order kept
    for group in ("random", "popular", "adversarial"):
        assert 70 < sum(s.group == group for s in chosen) < 130
    assert 120 < sum(s.target == "yes" for s in chosen) < 180
    assert spread(samples, 300) == chosen and spread(samples, None) == spread(samples, 10**6) == samples
    pairs = [Sample(f"{i}/{q}", "q", None, None, "", unit=str(i)) for i in range(50) for q in ("yes", "no")]
    chosen = spread(pairs, 20)
    assert len(chosen) == 20 and all(p.unit == n.unit for p, n in zip(chosen[::2], chosen[1::2], strict=True))


@pytest.mark.parametrize("name", ["pope", "mme"])
def test_every_headline_gets_an_interval_by_image(synthetic_root, name):
    """The benchmark's own score, resampled by image: perfect answers give a point interval at the
    maximum (an MME image drawn twice stays two images, so acc+ is not broken by the copies), and
    answers right on about half the images give an interval around the estimate."""
    import random

    from mqt_llava.eval.benchmarks import make_benchmark
    from mqt_llava.eval.runner import headline_interval

    benchmark = make_benchmark(name, synthetic_root)
    samples = benchmark.samples()
    truth = {s.key: s.target["answer"] if name == "mme" else s.target for s in samples}
    perfect = headline_interval(benchmark, samples, truth, resamples=200)
    top = benchmark.score(samples, truth)[benchmark.metric]
    assert perfect == {f"{benchmark.metric}_low": top, f"{benchmark.metric}_high": top}
    rng = random.Random(0)
    images = sorted({s.unit or s.image for s in samples})
    flipped = set(rng.sample(images, len(images) // 3))  # every answer about a third of the images wrong
    noisy = {
        s.key: ("no" if truth[s.key] == "yes" else "yes") if (s.unit or s.image) in flipped else truth[s.key]
        for s in samples
    }
    bounds = headline_interval(benchmark, samples, noisy, resamples=300)
    estimate = benchmark.score(samples, noisy)[benchmark.metric]
    assert bounds[f"{benchmark.metric}_low"] < estimate < bounds[f"{benchmark.metric}_high"]


def test_the_advisor_counts_the_noise():
    """A budget 0.5 below the best is within 1 point, but not when its interval reaches 3 below."""

    def result(m, value, low=None, high=None):
        scores = {"accuracy": value} | ({"accuracy_low": low, "accuracy_high": high} if low is not None else {})
        return PairResult("vqav2", m, "scored", scores)

    plain = [result(2, 60.0), result(8, 64.5), result(32, 65.0)]
    assert advise(plain, 1.0)["vqav2"]["advised_budget"] == 8
    noisy = [result(2, 60.0, 57, 63), result(8, 64.5, 62, 67), result(32, 65.0, 63, 67)]
    assert advise(noisy, 1.0)["vqav2"]["advised_budget"] == 32
    assert "64.5 [62.0, 67.0]" in table(noisy)


def test_two_sweeps_compared_on_the_same_images(synthetic_root, built, tmp_path):
    """A answers POPE right, B answers "yes" to everything: A - B is positive with an interval that
    excludes 0; A against itself is inconclusive at exactly 0."""
    import json

    from mqt_llava.eval.compare import compare_markdown, compare_sweeps
    from mqt_llava.eval.runner import Sweep
    from mqt_llava.eval.spec import EvalSpec
    from mqt_llava.model.export import save_export

    save_export(built, tmp_path / "export")
    config = EvalSpec(
        model=str(tmp_path / "export"),
        out=str(tmp_path / "a"),
        data_root=str(synthetic_root),
        benchmarks=["pope"],
        budgets="2",
    ).sweep_config()
    sweep = Sweep(config)
    samples = sweep.samples["pope"]
    for out, answer in ((tmp_path / "a", lambda s: s.target), (tmp_path / "b", lambda s: "yes")):
        path = out / "predictions" / "pope" / "m2.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text(
            "".join(json.dumps({"key": s.key, "prediction": answer(s), "error": ""}) + "\n" for s in samples)
        )
    (better,) = compare_sweeps(sweep, tmp_path / "b", resamples=300)
    assert better.a == 100 and better.b < 100 and 0 < better.low <= better.a - better.b <= better.high
    assert better.verdict == "A better" and "| pope | 2 | 100.0 |" in compare_markdown([better], "a", "b")
    (same,) = compare_sweeps(sweep, tmp_path / "a", resamples=100)
    assert (same.low, same.high, same.verdict) == (0, 0, "inconclusive")


def test_blank_like_keeps_size_and_mean_colour():
    from PIL import Image

    from mqt_llava.eval.runner import blank_like

    image = Image.new("RGB", (30, 10), (200, 0, 0))
    image.paste((0, 0, 200), (0, 0, 15, 10))
    blank = blank_like(image)
    assert blank.size == (30, 10) and blank.getcolors() == [(300, (100, 0, 100))]


def test_a_registered_benchmark_declares_its_own_table_1_column():
    """Table 1's columns come from the benchmarks' own declarations: a new one placed between
    VizWiz (1) and SQA-IMG (2) is a column there and counts in the average."""
    from mqt_llava.eval.benchmarks import BENCHMARKS, Benchmark, Column, register_benchmark

    class Counting(Benchmark):
        name = "counting"
        title = "Count"
        metric = "exact"
        columns = (Column("exact", "Count", order=1.5, scale=10.0),)

    register_benchmark(Counting)
    try:
        row = [
            PairResult("scienceqa", 8, "scored", {"accuracy": 60.0}, 10),
            PairResult("counting", 8, "scored", {"exact": 5.0}, 10),
            PairResult("vizwiz", 8, "scored", {"accuracy": 40.0}, 10),
        ]
        lines = table(row).splitlines()
        assert lines[0].startswith("| # tokens | VizWiz | Count | SQA-IMG | Avg")
        assert lines[2] == "| 8 | 40.0 | 5.0 | 60.0 | 50.0 |"  # (40 + 5/10*100 + 60) / 3
        assert "Beyond the paper's Table 1" not in table(row)
        with pytest.raises(ValueError, match="registered already"):
            register_benchmark(type("Counting", (Counting,), {}))
    finally:
        del BENCHMARKS["counting"]
