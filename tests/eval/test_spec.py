"""The evaluation spec is the one place a sweep's settings are declared: resolving it against an
export adds only the absolute paths, the budgets as numbers and the judge; every other setting
reaches the sweep as the spec holds it."""

import json

import pytest

from mqt_llava.eval.spec import EvalSpec


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "runs" / "my-run" / "export"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"max_visual_tokens": 16, "min_visual_tokens": 2}))
    return path


def test_resolving_adds_paths_budgets_and_judge_and_keeps_every_other_setting(export, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", "sk-test")
    spec = EvalSpec(
        model="runs/my-run/export",
        benchmarks=["pope"],
        budgets="2,8,M",
        batch_size=3,
        actors=2,
        engine="hf",
        blank_control=True,
        judge={"url": "http://judge/v1/", "model": "judge-1", "key_env": "JUDGE_KEY_FOR_TEST"},
    )
    config = spec.sweep_config()
    assert config.budgets == [2, 8, 16]
    assert config.spec.model == str(export.resolve())
    assert config.out == tmp_path / "runs" / "eval" / "my-run" and config.out.is_absolute()
    assert config.spec.data_root == str(tmp_path / "playground" / "data" / "eval")
    assert (config.judge.url, config.judge.model, config.judge.api_key) == ("http://judge/v1", "judge-1", "sk-test")
    unresolved = {"model", "out", "data_root"}
    assert config.spec.model_dump(exclude=unresolved) == spec.model_dump(exclude=unresolved)


def test_the_default_budgets_start_at_the_exports_smallest_and_no_judge_without_one(export):
    config = EvalSpec(model=str(export), benchmarks=["pope"]).sweep_config()
    assert config.budgets[0] == 2 and config.budgets[-1] == 16 and config.judge is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"budgets": "1,M"}, "1 outside 2..16"),
        ({"model": None}, "no export given"),
        ({"model": "/no/such/export"}, "not an export"),
    ],
)
def test_a_bad_spec_is_refused_when_resolved(export, fields, message):
    spec = EvalSpec(**{"model": str(export), "benchmarks": ["pope"], **fields})
    with pytest.raises(ValueError, match=message):
        spec.sweep_config()
