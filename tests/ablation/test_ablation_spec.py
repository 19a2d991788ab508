import itertools

import pytest
import yaml
from pydantic import ValidationError

from mqt_llava.ablation.axes import AXES as DECLARED
from mqt_llava.ablation.axes import grid_axes
from mqt_llava.ablation.spec import AblationSpec, Variant, stage1_key, stage_run
from mqt_llava.config import load_config, model_config_path, split_overrides
from mqt_llava.model.spec import ModelSpec
from mqt_llava.train.spec import StageSpec
from small_model import small_spec

COMMON = dict(
    name="t",
    stage1={"config": "s1.yaml"},
    stage2={"config": "s2.yaml"},
    eval={"data_root": "bench", "benchmarks": ["pope"]},
)
AXES = {
    "schedule": ["linear", "log", "fixed"],
    "order": ["attention_then_projection", "projection_then_attention"],
    "stage1_elastic": [False, True],
}


def labels(spec):
    return [v.label(spec.baseline) for v in spec.variants()]


def test_one_factor_design_is_the_baseline_plus_one_change_at_a_time():
    spec = AblationSpec(**COMMON, axes=AXES, fixed_budgets=[4, 16])
    assert labels(spec) == [
        "baseline/seed0",
        "log-schedule/seed0",
        "fixed-schedule/seed0",
        "proj-attn/seed0",
        "elastic-stage1-on/seed0",
        "fixed-m4/seed0",
        "fixed-m16/seed0",
    ]
    fixed4 = spec.variants()[5]
    assert sorted(fixed4.overrides("stage2")) == [
        "schedule.kind=fixed",
        "schedule.seed=0",
        "schedule.tokens=4",
        "seed=0",
    ]


def test_full_factorial_crosses_every_axis_for_every_seed():
    spec = AblationSpec(**COMMON, axes=AXES, design="full_factorial", seeds=[0, 1])
    variants = spec.variants()
    assert len(variants) == 3 * 2 * 2 * 2 and len(set(variants)) == len(variants)
    assert "log-schedule+proj-attn+elastic-stage1-on/seed1" in labels(spec)


def test_trials_share_stage1_exactly_when_stage1_would_be_the_same_run():
    spec = AblationSpec(**COMMON, axes=AXES, seeds=[0, 1])
    key = {v.label(spec.baseline): stage1_key(v, spec) for v in spec.variants()}
    assert key["baseline/seed0"] == key["log-schedule/seed0"] == key["fixed-schedule/seed0"]  # stage 2 only
    assert (
        len({key["baseline/seed0"], key["proj-attn/seed0"], key["elastic-stage1-on/seed0"], key["baseline/seed1"]}) == 4
    )
    other = spec.model_copy(update={"stage1": spec.stage1.model_copy(update={"overrides": ["lr=1"]})})
    assert stage1_key(spec.baseline, other) != key["baseline/seed0"]


def test_a_given_stage1_export_stands_only_for_trials_whose_stage1_is_the_same():
    stage2_only = AblationSpec(**COMMON, axes={"schedule": ["linear", "log"]}, stage1_export="runs/s1/export")
    assert stage2_only.stage1_export == "runs/s1/export"
    for changes_stage1 in (
        dict(axes={"order": AXES["order"]}),  # proj-attn trains its own stage 1
        dict(axes={"schedule": ["linear"]}, seeds=[0, 1]),  # a seed reaches stage 1
        dict(axes={"schedule": ["linear"]}, search={"stage1.lr": {"grid": [0.1, 0.2]}}),
    ):
        with pytest.raises(ValidationError, match="change stage 1, so one given stage-1 export cannot stand"):
            AblationSpec(**COMMON, **changes_stage1, stage1_export="runs/s1/export")
    stage2_search = dict(axes={"schedule": ["linear"]}, search={"stage2.lr": {"grid": [0.1, 0.2]}})
    assert AblationSpec(**COMMON, **stage2_search, stage1_export="e").stage1_export == "e"  # allowed


def test_bad_axis_values_and_fixed_tokens_without_fixed_schedule_are_refused():
    with pytest.raises(ValidationError, match="schedule"):
        AblationSpec(**COMMON, axes={"schedule": ["cubic"]})
    with pytest.raises(ValidationError, match="at least one"):
        AblationSpec(**COMMON, axes={"order": []})
    with pytest.raises(ValidationError, match="fixed_tokens needs schedule: fixed"):
        Variant(fixed_tokens=4)


def what_stage1_runs_with(variant, spec):
    """Stage 1's resolved stage and model specs, as resolve_run builds them (without data)."""
    config, overrides = stage_run(variant, spec, "stage1")
    model_overrides, overrides = split_overrides(overrides, "model")
    stage = load_config(StageSpec, config, overrides)
    return stage.model_dump(), load_config(ModelSpec, model_config_path(stage.model), model_overrides).model_dump()


def test_variants_differing_in_anything_stage1_runs_with_never_share_a_stage1(tmp_path):
    """Every pair of a full factorial over every axis and two seeds: the stage-1 key is equal exactly
    when the stage-1 run (its resolved stage and model specs) is."""
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump(small_spec().model_dump()))
    stage1 = tmp_path / "s1.yaml"
    stage1.write_text(
        yaml.safe_dump(
            dict(
                model=str(model),
                stage="stage1",
                template="plain",
                data="-",
                global_batch_size=8,
                micro_batch_size=4,
                lr=1e-3,
            )
        )
    )
    axes = {name: list(DECLARED[name].values) for name in grid_axes()}
    spec = AblationSpec(
        **COMMON | {"stage1": {"config": str(stage1)}},
        model=str(model),
        axes=axes,
        design="full_factorial",
        seeds=[0, 1],
    )
    variants = spec.variants()
    sizes = {name: len(values) for name, values in axes.items()}
    assert sizes == {"schedule": 3, "order": 2, "stage1_elastic": 2, "keys": 3, "connector": 2}
    # The MLP connector crossed with MQT options other than the baseline's would repeat its trial: left out.
    mqt, mlp = 3 * 2 * 2 * 3, 3 * 2
    assert len(variants) == (mqt + mlp) * 2
    keys = {v: stage1_key(v, spec) for v in variants}
    runs = {v: what_stage1_runs_with(v, spec) for v in variants}
    for a, b in itertools.combinations(variants, 2):
        assert (keys[a] == keys[b]) == (runs[a] == runs[b]), (a.label(spec.baseline), b.label(spec.baseline))
    # MQT: order x keys x stage1_elastic; MLP: stage1_elastic; x seed (schedule is stage 2's)
    assert len(set(keys.values())) == (2 * 3 * 2 + 2) * 2


TOY_QUESTIONS = "mqt_llava.toy.heldout:QUESTIONS"


def test_heldout_budgets_per_variant():
    from mqt_llava.ablation.spec import HeldoutRef

    ref = HeldoutRef(questions=TOY_QUESTIONS, corpus="c", curves={"baseline": "1,4,M", "log-schedule": "12,M"})
    assert ref.budgets_for("baseline", 32, None) == [1, 4, 32]
    assert ref.budgets_for("log-schedule", 32, None) == [12, 32]
    assert ref.budgets_for("proj-attn", 32, None) == [32]
    assert ref.budgets_for("fixed-m8", 32, 8) == [8, 32]  # a fixed model at its own m, and at M
    with pytest.raises(ValueError, match="heldout budgets of proj-attn: 40 outside 1..32"):
        HeldoutRef(questions=TOY_QUESTIONS, corpus="c", budgets="40").budgets_for("proj-attn", 32, None)


def test_the_held_out_question_set_is_named_in_the_spec_and_a_wrong_name_refused_when_it_loads():
    from mqt_llava.ablation.spec import HeldoutRef
    from mqt_llava.toy.heldout import QUESTIONS

    assert HeldoutRef(questions=TOY_QUESTIONS, corpus="c").question_set() is QUESTIONS
    with pytest.raises(ValueError, match="question set 'mqt_llava.toy.heldout:NOPE' cannot be loaded"):
        AblationSpec(**COMMON, heldout={"questions": "mqt_llava.toy.heldout:NOPE", "corpus": "c"})
    with pytest.raises(ValueError, match="questions\n  Field required"):
        AblationSpec(**COMMON, heldout={"corpus": "c"})


def test_held_out_questions_take_a_gpu_task_exactly_when_the_sweep_runs_on_gpus():
    """A trial holds one CPU (its training runs take the GPUs): on GPUs its held-out questions are
    answered by a task holding one GPU, on CPU in the trial's own process."""
    from mqt_llava.ablation.trial import heldout_task_resources

    on_gpu = AblationSpec(**COMMON | {"eval": COMMON["eval"] | {"use_gpu": True, "actor_cpus": 4}})
    assert heldout_task_resources(on_gpu) == {"num_gpus": 1, "num_cpus": 4}
    assert heldout_task_resources(AblationSpec(**COMMON)) is None


SEARCHED = """
search:
  stage2.lr: {loguniform: [1.0e-4, 1.0e-2]}
  stage2.warmup_ratio: {choice: [0.0, 0.03]}
  stage1.seed: {randint: {low: 0, high: 3}}
  model.connector.num_heads: {grid: [2, 4]}
num_samples: 3
scheduler: {kind: asha, metric: loss, mode: min, grace_period: 2, max_t: 8, reduction_factor: 2}
"""


def test_a_search_space_and_a_scheduler_in_the_yaml_become_tune_objects():
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.sample import Categorical, Float, Integer

    spec = AblationSpec(**COMMON, axes={"schedule": ["linear", "log"]}, **yaml.safe_load(SEARCHED))
    space = spec.param_space()
    assert space["variant"] == {"grid_search": ["baseline/seed0", "log-schedule/seed0"]}
    lr, warmup, seed = (space["search"][k] for k in ("stage2.lr", "stage2.warmup_ratio", "stage1.seed"))
    assert isinstance(lr, Float) and (lr.lower, lr.upper) == (1e-4, 1e-2) and type(lr.sampler).__name__ == "_LogUniform"
    assert isinstance(warmup, Categorical) and warmup.categories == [0.0, 0.03]
    assert isinstance(seed, Integer) and (seed.lower, seed.upper) == (0, 4)  # both ends drawn: Tune's upper is open
    assert space["search"]["model.connector.num_heads"] == {"grid_search": [2, 4]}
    assert spec.trial_count() == 2 * 3 * 2
    asha = spec.trial_scheduler()
    assert isinstance(asha, ASHAScheduler) and (asha.metric, asha._mode) == ("loss", "min")
    assert (asha._time_attr, asha._max_t, asha._reduction_factor) == ("step", 8, 2)
    assert asha._stop_last_trials is False  # a trial at its last step goes on to its evaluation
    assert [rung for rung, _ in asha._brackets[0]._rungs] == [8, 4, 2]  # grace period 2, halving up to max_t

    # A trial's variant: the grid point plus its draws, which reach its stages and its label.
    trial = spec.trial_variant({"variant": "log-schedule/seed0", "search": {"stage2.lr": 0.00123, "stage1.seed": 2}})
    assert trial.label(spec.baseline) == "log-schedule+stage1.seed=2+stage2.lr=0.00123/seed0"
    assert "lr=0.00123" in trial.overrides("stage2") and "seed=2" in trial.overrides("stage1")
    assert stage1_key(trial, spec) != stage1_key(spec.variant("log-schedule/seed0"), spec)  # stage 1 differs
    no_stage1 = spec.trial_variant({"variant": "baseline/seed0", "search": {"stage2.lr": 0.5}})
    assert stage1_key(no_stage1, spec) == stage1_key(spec.baseline, spec)  # a stage-2 draw shares stage 1


@pytest.mark.parametrize(
    ("declared", "error"),
    [
        ({"search": {"stage2.lr": {"lognormal": [0, 1]}}}, "unknown distribution 'lognormal'; known: choice, grid"),
        ({"search": {"stage2.lr": {"loguniform": [0.0, 1.0]}}}, r"search.stage2.lr: loguniform: .*greater than 0"),
        ({"search": {"stage2.lr": {"uniform": [2, 1]}}}, r"low \(2.0\) must be below high"),
        ({"search": {"stage2.lr": {"uniform": [1, 2, 3]}}}, "uniform takes 2 argument"),
        ({"search": {"lr": {"uniform": [1, 2]}}}, "name a field as <part>.<dotted field>"),
        ({"search": {"stage2.lr": {"uniform": [1, 2], "choice": [1]}}}, "give one distribution"),
        (
            {"scheduler": {"kind": "hyperband", "metric": "loss", "mode": "min"}},
            "unknown kind 'hyperband'; known: asha",
        ),
        ({"scheduler": {"kind": "asha", "metric": "loss", "mode": "least", "max_t": 4}}, "mode"),
        ({"scheduler": {"kind": "asha", "metric": "loss", "mode": "min", "max_t": 2, "grace_period": 3}}, "max_t"),
        ({"scheduler": {"metric": "loss"}}, "give a mapping with its kind"),
        ({"num_samples": 2}, "needs a search space"),
        ({"axes": {"colour": ["red"]}}, "axes.colour: unknown axis; known: schedule"),
    ],
)
def test_a_bad_search_space_or_scheduler_is_refused_when_the_spec_loads(declared, error):
    with pytest.raises(ValidationError, match=error):
        AblationSpec(**COMMON, **declared)
