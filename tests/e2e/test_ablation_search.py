"""A Tune search space and an ASHA scheduler declared in the ablation's YAML, end to end: two trials
over stage 2's learning rate, one at a time, on the same data in the same order. The first (0.1)
sets the rung at step 3, its loss well down by then (4.7 against 5.6, measured); the second (1e-9)
has not moved, so ASHA stops it there, before its evaluation, and the first finishes with its scores."""

import json

import pytest
import yaml
from small_stages import small_ablation

from mqt_llava.ablation.experiment import run_experiment
from mqt_llava.ablation.spec import AblationSpec

pytestmark = pytest.mark.e2e

SEARCH = """
search:
  stage2.lr: {grid: [0.1, 1.0e-9]}
scheduler: {kind: asha, metric: loss, mode: min, time_attr: step, grace_period: 3, max_t: 4, reduction_factor: 2}
max_concurrent_trials: 1                   # the first trial sets the rung the second is compared at
"""


def test_asha_stops_the_trial_that_falls_behind(tmp_path, ray_local):
    fields = small_ablation(
        tmp_path,
        records=48,
        num_eval=4,
        name="search",
        eval={"benchmarks": ["pope"], "limit": 8, "budgets": "M"},
        axes={"schedule": ["linear"]},
        **yaml.safe_load(SEARCH),
    )
    stage2 = fields["stage2"]["overrides"]  # 4 steps, each reported (the first at lr 0: one warmup step)
    fields["stage2"]["overrides"] = [o.replace("max_steps=2", "max_steps=4") for o in stage2]
    spec = AblationSpec(**fields)
    outcome = run_experiment(spec, log=print)

    assert outcome["errors"] == [] and outcome["variants"] == 2
    assert outcome["trials"] == 1 and outcome["stopped"] == 1
    (finished,) = (spec.root / "trials").glob("*/result.json")
    result = json.loads(finished.read_text())
    assert result["variant"]["search"] == {"stage2.lr": 0.1} and result["training"]["step"] == 4
    assert "average@M" not in result["training"] and result["results"]  # evaluated: its scores are there
    runs = {p.parent.name for p in (spec.root / "runs").glob("stage2-*/done.json")}
    assert runs == {"stage2-stage2.lr=0.1_seed0"}  # the stopped trial's stage 2 never finished
