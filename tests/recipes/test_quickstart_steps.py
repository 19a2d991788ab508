"""The quickstart's own parts that no other test covers, without Ray: its refusals before anything runs,
step 6 (held-out questions beside their controls) on a small export, the Serve config step 8 deploys
read against the tiny preset, and the lines it ends with. The steps it shares with other jobs are
tested where those jobs are (training, the sweep, Serve, the ablation: tests/e2e/); the job's own step
sequence on embedded Ray is tests/e2e/test_quickstart.py."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from checkout import REPO_ROOT
from mqt_llava.ablation.spec import stage1_key, stage_run
from mqt_llava.config import load_config, model_config_path, prefixed, preset_path, split_overrides
from mqt_llava.model.builder import build_model
from mqt_llava.model.export import save_export
from mqt_llava.model.spec import ModelSpec, connector_token_range
from mqt_llava.recipes.quickstart import STEP_NAMES, STEPS, Context, QuickstartSpec, ablation_spec, step_evaluate
from mqt_llava.serve.settings import ServeSpec
from mqt_llava.toy.heldout import heldout_questions
from mqt_llava.train.spec import StageSpec
from small_model import small_spec


def quickstart(*overrides):
    sets = [a for o in overrides for a in ("--set", o)]
    return subprocess.run(
        [sys.executable, "jobs/quickstart.py", *sets], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_a_budget_above_M_is_refused_before_anything_runs(tmp_path):
    done = quickstart(f"run_dir={tmp_path}", "heldout_budgets=2,33")
    assert done.returncode == 2 and "heldout_budgets: 33 outside 1..32" in done.stderr
    assert not (tmp_path / "data").exists() and "Ray:" not in done.stdout


def test_a_bad_world_is_refused_before_anything_runs(tmp_path):
    done = quickstart(f"run_dir={tmp_path}", "world.cells=x")
    assert done.returncode == 2 and "world.cells" in done.stderr and "Ray:" not in done.stdout


def test_the_steps_run_in_the_order_their_names_give():
    assert [name for name, _ in STEPS] == list(STEP_NAMES)
    assert QuickstartSpec().until == STEP_NAMES[-1]  # by default every step runs


@pytest.fixture
def stage2_run(tmp_path, heldout_corpus):
    """A run directory as step 6 finds it after step 5: held-out scenes where step 1 writes them (the
    session's, linked) and a (small, untrained) stage-2 export where step 5 writes it."""
    ctx = Context(QuickstartSpec(run_dir=str(tmp_path), heldout_budgets="2,M", heldout_scenes=4))
    ctx.corpus.symlink_to(heldout_corpus, target_is_directory=True)
    torch.manual_seed(0)
    save_export(build_model(small_spec()), ctx.stage2_export)
    return ctx


def test_step_6_scores_each_budget_beside_the_majority_and_blank_image_controls(stage2_run, capsys):
    """What the full quickstart run checked of step 6, on a small model's export (M = 8)."""
    ctx = stage2_run
    step_evaluate(ctx)
    printed = capsys.readouterr().out
    result = json.loads(json.dumps(ctx.results["evaluate"]))  # as summary.json holds it
    questions = heldout_questions(ctx.corpus, limit=4)
    assert result["questions"] == len(questions) > 0
    assert list(result["scores"]) == ["majority", "m=2/image", "m=8/image", "m=8/blank"]  # the controls beside
    for row in result["scores"].values():
        assert 0 <= row["all"]["low"] <= row["all"]["estimate"] <= row["all"]["high"] <= 1
    assert "held-out exact match (%), " in printed and "uses the image at m = 8 (image - blank): " in printed
    assert result["uses_image"] in printed
    assert result["pilot_gates"] and all(f"pilot gate {name}: " in printed for name in result["pilot_gates"])
    focus = result["focus"]  # how the visual tokens share the image, at each budget
    assert list(focus) == ["2", "8"]
    assert all(0 <= f["similarity"] <= 1 + 1e-6 and f["images"] == 4 for f in focus.values())
    assert "visual tokens at m = 8 over" in printed
    kept = ctx.run_dir / "heldout"  # every answer kept, one line per question
    assert sorted(p.name for p in kept.iterdir()) == ["m2-image.jsonl", "m8-blank.jsonl", "m8-image.jsonl"]
    assert all(len(p.read_text().splitlines()) == len(questions) for p in kept.iterdir())


def test_step_6_refuses_a_budget_the_export_does_not_have(stage2_run):
    ctx = Context(stage2_run.spec.model_copy(update={"heldout_budgets": "2,16"}))  # the export's M is 8
    with pytest.raises(ValueError, match="heldout_budgets: 16 outside 1..8"):  # (the job checks the preset's)
        step_evaluate(ctx)


@pytest.mark.parametrize(
    "connector",
    [{"num_queries": 16}, {"order": "projection_then_attention", "keys": "position_only"}],  # the grid's axes too
)
def test_step_9_grid_starts_from_step_4_export_and_names_what_step_4_ran(tmp_path, connector):
    """The grid trains no stage 1 of its own: its trials differ in stage 2 only, start from the export
    step 4 leaves, and its stage-1 reference resolves to the run step 4 made (same spec, same data),
    also where the run's connector sets what a grid axis sets (the baseline takes the run's values)."""
    ctx = Context(QuickstartSpec(run_dir=str(tmp_path), stage1={"lr": 0.002}, model={"connector": connector}))
    spec = ablation_spec(ctx)
    assert spec.stage1_export == str(ctx.storage / "tiny-stage1" / "export")
    ctx.results["stage1"] = {"export": "elsewhere/export"}  # this run's step 4 ran: its own export
    assert ablation_spec(ctx).stage1_export == "elsewhere/export"
    assert len({stage1_key(v, spec) for v in spec.variants()}) == 1 and len(spec.variants()) == 2

    def resolved(config, overrides):  # the stage and model specs a run resolves to (resolve_run, less the data)
        model_overrides, overrides = split_overrides(overrides, "model")
        stage = load_config(StageSpec, config, overrides)
        return stage, load_config(ModelSpec, model_config_path(stage.model), model_overrides)

    # step 4's own overrides (quickstart.train), then the grid's stage-1 reference
    step4 = [f"data={ctx.shards / '558k'}", *ctx.spec.overrides("stage1"), *prefixed("model", ctx.model_overrides)]
    assert resolved(*stage_run(spec.baseline, spec, "stage1")) == resolved(ctx.config("stage1"), step4)
    model = resolved(ctx.config("stage1"), step4)[1].connector
    assert {k: getattr(model, k) for k in connector} == connector  # the run's model change is in both


def test_the_serve_config_step_8_deploys_gives_each_tier_its_budget_on_the_tiny_preset():
    """Step 8 serves serve_apps/config.yaml's application on the stage-2 export: its tiers, read against
    the tiny preset's M, are the budgets the quickstart's answers come from (tests/e2e/test_serving.py
    deploys the same application on real Serve)."""
    app = yaml.safe_load((REPO_ROOT / QuickstartSpec().serve_config).read_text())["applications"][0]
    spec = ServeSpec(**(app["args"] | {"model": str(Context(QuickstartSpec()).stage2_export)}))
    low, maximum = connector_token_range(load_config(ModelSpec, preset_path("tiny", "model")))
    assert {t.name: t.budget(maximum, low) for t in spec.tiers} == {"fast": 4, "balanced": 16, "full": 32}
    assert spec.auto.enabled  # the fourth model id, `auto`, routes between them


def test_the_last_lines_say_what_to_open_for_the_steps_that_ran(tmp_path):
    ctx = Context(QuickstartSpec(run_dir=str(tmp_path)))
    assert ctx.next_steps() == [f"  the run directory: {tmp_path}"]  # no step with something to open ran
    export = tmp_path / "train" / "tiny-stage2" / "export"
    ctx.results |= {"stage1": {}, "stage2": {}}
    lines = ctx.next_steps()
    assert lines[0] == f"  MLflow runs:   mlflow ui --backend-store-uri sqlite:///{tmp_path}/train/mlflow.db"
    assert f"serve run ./serve_apps/config.yaml   (args.model: {export})" in lines[1]
    assert f"InferenceEngine.from_export('{export}')" in lines[2]
    ctx.results |= {"benchmarks": {"report": str(tmp_path / "eval")}, "ablation": {"report": "r/ablation_report.md"}}
    lines = ctx.next_steps()
    assert lines[1] == f"  budget sweep:  {tmp_path}/eval/table.md (plots/, advisor.md)"
    assert lines[2] == "  ablation:      r/ablation_report.md" and len(lines) == 5
