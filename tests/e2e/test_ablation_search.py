"""A Tune search space and an ASHA scheduler declared in the ablation's YAML, end to end, and a failed
trial retried by Tune (FailureConfig) without redoing what it had finished.

Two trials over stage 2's learning rate, one at a time, on the same data in the same order. The first
(0.1) sets the rung at step 3, its loss well down by then; the second (1e-9) has not moved, so ASHA
stops it there, before its evaluation. The first trial's evaluation dies
once (a fault injected after stage 2 trained): Tune retries the trial, the retry finds stage 2 finished
and pays only the evaluation, and its scores land in the trial's one MLflow run. Stage 1 is not what
this test is about: both trials start from one export made here (`stage1_export`), none is trained."""

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from small_stages import small_ablation

from mqt_llava.ablation.experiment import run_experiment
from mqt_llava.ablation.spec import AblationSpec
from mqt_llava.ablation.trial import run_trial, tracking_for
from mqt_llava.model.builder import build_model
from mqt_llava.model.export import save_export
from mqt_llava.model.spec import ModelSpec

pytestmark = pytest.mark.e2e

SEARCH = """
search:
  stage2.lr: {grid: [0.1, 1.0e-9]}
scheduler: {kind: asha, metric: loss, mode: min, time_attr: step, grace_period: 3, max_t: 4, reduction_factor: 2}
max_concurrent_trials: 1                   # the first trial sets the rung the second is compared at
max_failures: 1
"""


def evaluation_fails_once(config: dict, spec_json: str, parent_run_id: str | None) -> None:
    """run_trial, with the first evaluation sweep of the experiment raising (a marker file tells
    attempts apart; only a trial that ASHA lets finish reaches its evaluation)."""
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


def test_asha_stops_the_trial_that_falls_behind_and_a_failed_trial_is_retried(tmp_path, ray_local):
    fields = small_ablation(
        tmp_path,
        records=48,
        num_eval=4,
        name="search",
        eval={"benchmarks": ["pope"], "limit": 8},
        axes={"schedule": ["linear"]},
        **yaml.safe_load(SEARCH),
    )
    stage1 = tmp_path / "stage1-export"  # what a stage-1 run's export holds, untrained: stage 2 starts from it
    save_export(build_model(ModelSpec(**yaml.safe_load((tmp_path / "model.yaml").read_text())), seed=0), stage1)
    fields["stage1_export"] = str(stage1)
    stage2 = fields["stage2"]["overrides"]  # 4 steps, each reported (the first at lr 0: one warmup step)
    fields["stage2"]["overrides"] = [o.replace("max_steps=2", "max_steps=4") for o in stage2]
    spec = AblationSpec(**fields)
    outcome = run_experiment(spec, log=print, trainable=evaluation_fails_once)

    assert outcome["errors"] == [] and outcome["variants"] == 2
    assert outcome["trials"] == 1 and outcome["stopped"] == 1
    (finished,) = (spec.root / "trials").glob("*/result.json")
    result = json.loads(finished.read_text())
    assert result["variant"]["search"] == {"stage2.lr": 0.1} and result["training"]["step"] == 4
    assert "average@M" not in result["training"] and result["results"]  # evaluated: its scores are there
    assert {r["budget"] for r in result["results"]} == {2, 8}
    runs = {p.parent.name for p in (spec.root / "runs").glob("*/done.json")}
    assert runs == {"stage2-stage2.lr=0.1_seed0"}  # the stopped trial's stage 2 never finished; no stage 1 ran
    assert result["stage1_export"] == str(stage1)

    # The retry: the first attempt did fail (Tune kept its error), and stage 2, finished before the
    # fault, was not trained again.
    fault = json.loads((spec.root / "fault.json").read_text())
    assert any("injected fault" in p.read_text() for p in (spec.root / "tune").rglob("error.txt"))
    stage2_done = Path(result["stage2_export"]).parent / "done.json"
    assert stage2_done.stat().st_mtime_ns == fault["stage2_done_mtime_ns"]
    # One MLflow run per trial (the retry logged into its trial's run, with the scores).
    # (a client, not mlflow.set_tracking_uri: that sets MLFLOW_TRACKING_URI for every later test)
    client = MlflowClient(tracking_uri=tracking_for(spec).uri)
    experiment = client.get_experiment_by_name(spec.experiment)
    trials = client.search_runs([experiment.experiment_id], filter_string="tags.`mqt_llava.ablation` = 'search'")
    retried = [r for r in trials if r.info.run_id == result["mlflow_run_id"]]
    assert len(trials) == 2 and len(retried) == 1 and "pope/f1" in retried[0].data.metrics
