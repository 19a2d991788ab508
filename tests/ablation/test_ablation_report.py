import dataclasses
import json

from mqt_llava.ablation.report import load_trials, write_report
from mqt_llava.eval.runner import PairResult


def write_trial(root, label, variant, scores):
    """scores: {(benchmark, m): headline}; POPE's headline is f1, VQAv2's accuracy."""
    metric = {"pope": "f1", "vqav2": "accuracy"}
    results = [PairResult(b, m, "scored", {metric[b]: v}, samples=10) for (b, m), v in scores.items()]
    path = root / "trials" / label.replace("/", "_")
    path.mkdir(parents=True)
    (path / "result.json").write_text(
        json.dumps(
            {"label": label, "variant": variant, "max_tokens": 8, "results": [dataclasses.asdict(r) for r in results]}
        )
    )


def curve(pope, vqa):
    return {("pope", m): p for m, p in zip((2, 4, 8), pope, strict=True)} | {
        ("vqav2", m): v for m, v in zip((2, 4, 8), vqa, strict=True)
    }


def test_report_has_table2_at_M_with_seed_spread_elastic_vs_fixed_advisor_and_curves(tmp_path):
    write_trial(tmp_path, "baseline/seed0", {"seed": 0}, curve((60, 70, 80), (40, 50, 52)))
    write_trial(tmp_path, "baseline/seed1", {"seed": 1}, curve((62, 72, 84), (42, 52, 54)))
    write_trial(tmp_path, "log-schedule/seed0", {"seed": 0, "schedule": "log"}, curve((50, 60, 70), (30, 40, 45)))
    write_trial(
        tmp_path,
        "fixed-m4/seed0",
        {"seed": 0, "schedule": "fixed", "fixed_tokens": 4},
        {("pope", 4): 75.0, ("vqav2", 4): 49.0},
    )
    report = write_report(load_trials(tmp_path), tmp_path / "report", points=2.0)
    text = report.read_text()
    # Table 2: rows = variants (baseline first), at m = M; two seeds -> mean ± s.d.; average = mean % of max
    assert "| variant | seeds | VQAv2 | POPE | Avg (% of max) |" in text
    assert "| baseline | 2 | 53.0 ± 1.4 | 82.0 ± 2.8 | 67.5 ± 2.1 |" in text
    assert "| log-schedule | 1 | 45.0 | 70.0 | 57.5 |" in text
    assert "| fixed-m4 | 1 |" not in text  # fixed-m models are compared at their own m, not at M
    assert "| 4 | fixed-m4 | 49.0 | 75.0 | 62.0 |" in text
    assert "| 4 | baseline (elastic) | 51.0 ± 1.4 | 71.0 ± 1.4 | 61.0 ± 1.4 |" in text
    # advisor: baseline's VQAv2 mean curve 41, 51, 53 -> within 2 points of 53 from m = 4; POPE only at 8
    assert "| VQAv2 | 4 | 8 |" in text and "| POPE | 8 | 8 |" in text
    for name in ("pope", "vqav2", "average"):
        assert (tmp_path / "report" / f"curve_{name}.png").stat().st_size > 1000


def test_an_experiment_with_no_finished_trial_gets_a_report_and_no_empty_plots(tmp_path):
    report = write_report(load_trials(tmp_path / "experiment"), tmp_path / "report")
    assert report.exists() and not list((tmp_path / "report").glob("*.png"))
