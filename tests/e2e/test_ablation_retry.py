"""A trial that fails is retried by Tune (FailureConfig), and the retry redoes nothing finished: a fault
injected into the first attempt's evaluation, after stage 2 trained, costs only the evaluation."""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from small_stages import small_ablation

from mqt_llava.ablation.experiment import run_experiment
from mqt_llava.ablation.spec import AblationSpec
from mqt_llava.ablation.trial import run_trial, tracking_for

pytestmark = pytest.mark.e2e


def evaluation_fails_once(config: dict, spec_json: str, parent_run_id: str | None) -> None:
    """run_trial, with the first attempt's evaluation sweep raising (a marker file tells attempts apart)."""
    import mqt_llava.eval.evaluate as evaluate

    spec = AblationSpec.model_validate_json(spec_json)
    fault = spec.root / "fault.json"
    if not fault.exists():
        real = evaluate.run_evaluation

        def broken(sweep, *args, **kwargs):
            stage2_done = Path(sweep.spec.model).parent / "done.json"
            fault.write_text(json.dumps({"stage2_done_mtime_ns": stage2_done.stat().st_mtime_ns}))
            evaluate.run_evaluation = real
            raise RuntimeError("injected fault: the evaluation's first attempt dies")

        evaluate.run_evaluation = broken
    run_trial(config, spec_json, parent_run_id)


def test_a_failed_trial_is_retried_and_keeps_what_it_had_finished(tmp_path, ray_local):
    spec = AblationSpec(
        **small_ablation(
            tmp_path,
            records=48,
            num_eval=4,
            name="retry",
            eval={"benchmarks": ["pope"], "limit": 8},
            axes={"schedule": ["linear"]},
            max_failures=1,
        )
    )
    outcome = run_experiment(spec, log=print, trainable=evaluation_fails_once)

    fault = json.loads((spec.root / "fault.json").read_text())  # the first attempt did fail
    assert outcome["errors"] == [] and outcome["trials"] == outcome["variants"] == 1
    result = json.loads((spec.root / "trials" / "baseline_seed0" / "result.json").read_text())
    assert {r["budget"] for r in result["results"]} == {2, 8}
    # stage 2 finished before the fault and the retry did not train it again
    stage2_done = Path(result["stage2_export"]).parent / "done.json"
    assert stage2_done.stat().st_mtime_ns == fault["stage2_done_mtime_ns"]
    # Tune counted the failure
    assert any("injected fault" in p.read_text() for p in (spec.root / "tune").rglob("error.txt"))
    # the retry logged into the trial's MLflow run: one child run, with the scores
    # (a client, not mlflow.set_tracking_uri: that sets MLFLOW_TRACKING_URI for every later test)
    client = MlflowClient(tracking_uri=tracking_for(spec).uri)
    experiment = client.get_experiment_by_name(spec.experiment)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`mqt_llava.ablation` = 'retry'")
    assert len(runs) == 1 and "pope/f1" in runs[0].data.metrics
