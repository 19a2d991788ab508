import subprocess
import sys

import cloudpickle
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mqt_llava.config import ConfigError, prefixed
from mqt_llava.data.shards import count_rows
from mqt_llava.model.schedules import schedule_support
from mqt_llava.train import plan as plan_module
from mqt_llava.train.plan import StageRun, plan_steps, resolve_run
from mqt_llava.train.spec import StageSpec
from mqt_llava.train.worker import ray_train_worker
from small_model import small_spec


def stage(**changes) -> StageSpec:
    fields = dict(
        model="tiny",
        stage="stage2",
        template="vicuna_v1",
        data="shards",
        global_batch_size=32,
        micro_batch_size=4,
        num_workers=2,
        lr=1e-3,
    )
    return StageSpec(**{**fields, **changes})


def test_plan_gives_every_rank_the_same_whole_steps():
    # 1001 rows on 2 workers: 500 each (equal split) -> 125 micro-batches of 4 -> 31 steps of accumulation 4
    plan = plan_steps(stage(), small_spec(), rows=1001)
    assert (plan.micro_batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (125, 31, 31)
    assert plan.warmup_steps == 1  # 3 % of 31, at least one
    assert plan_steps(stage(epochs=2.5), small_spec(), rows=1001).total_steps == 78  # ceil(2.5 x 31)
    assert plan_steps(stage(epochs=3, max_steps=40), small_spec(), rows=1001).total_steps == 40
    # the same global batch on one worker: accumulation 8, the same number of optimizer steps
    assert plan_steps(stage(num_workers=1), small_spec(), rows=1001).steps_per_epoch == 31


def test_plan_refuses_data_smaller_than_one_step():
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        plan_steps(stage(), small_spec(), rows=31)


def run_of(spec: StageSpec) -> StageRun:
    return StageRun(
        stage=spec,
        model=small_spec(),
        name="t",
        storage="/tmp",
        plan=plan_steps(spec, small_spec(), 1000),
        use_gpu=False,
    )


def test_budget_is_M_in_stage1_and_drawn_from_the_schedule_otherwise():
    one = run_of(stage(stage="stage1", template="plain")).plan
    assert {one.budget(s) for s in range(50)} == {8}  # small_spec: M = 8
    two = run_of(stage()).plan
    drawn = [two.budget(s) for s in range(200)]
    assert set(drawn) <= set(schedule_support("linear", 8, 2)) and len(set(drawn)) > 1
    assert drawn == [two.budget(s) for s in range(200)]  # pure in the step: every rank agrees
    elastic = run_of(stage(stage="stage1", template="plain", stage1_elastic=True)).plan
    assert len({elastic.budget(s) for s in range(50)}) > 1


def test_M_and_the_schedule_are_resolved_once_in_the_plan_and_recorded(monkeypatch):
    two = run_of(stage(schedule={"kind": "log"})).plan
    assert two.max_tokens == 8 and two.schedule.support == (2, 4, 8)
    assert two.record()["budgets"] == [2, 4, 8] and two.record()["max_tokens"] == 8
    one = run_of(stage(stage="stage1", template="plain")).plan
    assert one.schedule is None and one.record()["budgets"] == [8]
    # Drawing m reads the plan only: nothing re-derives M or the schedule from the specs per step.
    for name in ("token_schedule", "max_visual_tokens"):
        monkeypatch.setattr(plan_module, name, lambda *a, **k: pytest.fail("re-derived during the run"))
    assert {two.budget(s) for s in range(50)} == {2, 4, 8} and {one.budget(s) for s in range(50)} == {8}


def write_shards(directory, rows: int) -> None:
    directory.mkdir(parents=True)
    for i, n in enumerate((rows // 2, rows - rows // 2)):
        pq.write_table(pa.table({"id": [f"{i}-{j}" for j in range(n)]}), directory / f"part-{i}.parquet")
    (directory / "summary.json").write_text("{}")  # prepare_llava's side files are not shards


def test_count_rows_reads_parquet_footers(tmp_path):
    write_shards(tmp_path / "shards", 101)
    assert count_rows(str(tmp_path / "shards")) == 101


@pytest.fixture
def configs(tmp_path):
    model = tmp_path / "model.yaml"
    model.write_text(yaml.safe_dump(small_spec().model_dump()))
    write_shards(tmp_path / "shards", 200)
    config = tmp_path / "stage2.yaml"
    config.write_text(
        yaml.safe_dump(
            dict(
                model=str(model),
                stage="stage2",
                template="vicuna_v1",
                data=str(tmp_path / "shards"),
                global_batch_size=8,
                micro_batch_size=4,
                lr=1e-3,
            )
        )
    )
    return config


def test_resolve_run_plans_from_the_data(configs, tmp_path):
    run = resolve_run(configs, [], name=None, storage=str(tmp_path / "runs"))
    assert run.name == "test-stage2" and run.plan.total_steps == 25 and run.stage.gradient_accumulation_steps == 2
    assert run.export_dir == f"{tmp_path}/runs/test-stage2/export"


@pytest.mark.parametrize(
    ("overrides", "model_overrides", "expected"),
    [
        (["lr=-1"], [], r"lr: Input should be greater than 0"),
        (["global_batch_size=6"], [], r"global_batch_size 6 must be a multiple"),
        (["data=/nonexistent/shards"], [], r"data: no shards at /nonexistent/shards"),
        (["init_from=/nonexistent/export"], [], r"init_from: /nonexistent/export is not an export"),
        (["global_batch_size=400"], [], r"global_batch_size: 200 rows are fewer than one optimizer step"),
        (
            [],
            ["llm.pretrained=./no/such/llm"],
            r"model llm.pretrained: pretrained directory \S*/no/such/llm does not exist",
        ),
        (["stage=stage1"], [], r"template 'vicuna_v1' does not belong to stage1"),
    ],
)
def test_bad_configs_fail_in_the_driver_naming_the_field(configs, tmp_path, overrides, model_overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        resolve_run(configs, overrides + prefixed("model", model_overrides), name=None, storage=str(tmp_path / "runs"))


def test_a_stage_job_refuses_the_other_stage_config(configs, tmp_path):
    with pytest.raises(ConfigError, match="this job runs stage1"):
        resolve_run(configs, [], name=None, storage=str(tmp_path), expect_stage="stage1")


def test_relative_paths_reach_workers_absolute(configs, tmp_path, monkeypatch):
    # Ray runs workers in its own working directory: relative paths are resolved in the driver.
    (tmp_path / "tok").mkdir()
    monkeypatch.chdir(tmp_path)
    run = resolve_run(configs, ["data=shards", "model.tokenizer.pretrained=./tok"], name=None, storage="runs")
    assert run.stage.data == str(tmp_path / "shards") and run.storage == str(tmp_path / "runs")
    assert run.model.tokenizer.pretrained == str(tmp_path / "tok")
    assert run.model.llm.pretrained is None  # unset stays unset; hub names stay names


def test_ray_trains_controller_unpickles_the_run_without_the_model_code_or_deepspeed():
    """The controller unpickles the trainer: `ray_train_worker` and its config, the `StageRun` (the
    specs and the connector options inside), in a process that never trains and whose start is on
    the critical path of every run. It needs torch (Ray Train's torch backend imports it), not
    transformers' model code or DeepSpeed, which only the workers use (about 5 CPU-s more)."""
    run = run_of(stage())
    heavy = ("transformers.modeling_utils", "deepspeed", "mqt_llava.model.modeling", "mqt_llava.train.loop")
    script = f"""
import pickle, sys
worker, config = pickle.load(sys.stdin.buffer)
assert worker.__name__ == "ray_train_worker" and config["run"].plan.total_steps == {run.plan.total_steps}
print(sorted(n for n in {heavy!r} if n in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=cloudpickle.dumps((ray_train_worker, {"run": run})),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stdout.decode().strip() == "[]"
