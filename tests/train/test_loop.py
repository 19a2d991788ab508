"""The training loop (mqt_llava.train.loop) with a plain torch strategy and an in-memory context: the
real loop, model, collation, plan and checkpoint files, in one process without DeepSpeed or Ray.

The uninterrupted run: 16 rows, micro-batches of 2, accumulation 2 (4 steps an epoch), 2 epochs =
8 optimizer steps, a checkpoint every 2 steps."""

from __future__ import annotations

import json

import pytest
import torch
from core_fakes import MemoryContext, PlainTorchStrategy, one_process_group, small_run, training_rows

from mqt_llava.model.export import load_part_state, read_training_record
from mqt_llava.model.stages import CONNECTOR
from mqt_llava.train import plan as plan_module
from mqt_llava.train.checkpoint import TRAIN_STATE
from mqt_llava.train.loop import train_loop
from mqt_llava.train.plan import resolved_config

ROWS = training_rows(16)
STEPS = 8


def train(run, context) -> PlainTorchStrategy:
    strategy = PlainTorchStrategy(run.stage, use_gpu=False)
    train_loop(run, context, strategy)
    return strategy


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tracking_uri):
    """The uninterrupted run: (run, its context, its strategy)."""
    root = tmp_path_factory.mktemp("whole")
    run = small_run(root, tracking_uri, len(ROWS), name="whole", epochs=2, checkpoint_every=2)
    assert run.plan.total_steps == STEPS and run.plan.steps_per_epoch == 4
    context = MemoryContext(root / "checkpoints", ROWS)
    with one_process_group(root / "group-store"):
        strategy = train(run, context)
    return run, context, strategy


@pytest.mark.parametrize("step", [2, 4, 6])  # mid-epoch 0, at the epoch's end, mid-epoch 1
def test_a_resumed_run_goes_on_from_its_checkpoint_as_the_uninterrupted_run_did(
    whole, step, tmp_path, tracking_uri, process_group, capsys
):
    run, context, strategy = whole
    resumed_run = small_run(tmp_path, tracking_uri, len(ROWS), name=f"resumed-{step}", epochs=2, checkpoint_every=2)
    resumed = MemoryContext(tmp_path / "checkpoints", ROWS, resume_from=context.checkpoint_at(step))
    again = train(resumed_run, resumed)
    assert f"[resumed-{step}] resumed at step {step}/{STEPS}" in capsys.readouterr().out
    # The same later steps: the same m, the same samples (none seen twice, none skipped), the same losses.
    assert again.steps() == strategy.steps()[step:]
    assert [saved for saved, _, _ in resumed.saved] == list(range(step + 2, STEPS + 1, 2))
    final, resumed_final = strategy.trained_state(), again.trained_state()
    assert all(torch.equal(final[k], resumed_final[k]) for k in final)


def test_a_checkpoint_every_n_steps_and_at_the_last_holding_the_step_and_its_metrics(tmp_path, tracking_uri, whole):
    run, context, strategy = whole
    assert [step for step, _, _ in context.saved] == [2, 4, 6, 8]
    steps = strategy.steps()
    for step, metrics, directory in context.saved:
        assert json.loads((directory / TRAIN_STATE).read_text())["step"] == step
        assert metrics["m"] == steps[step - 1]["m"]
        assert metrics["loss"] == pytest.approx(sum(steps[step - 1]["losses"]) / 2)
    # A cadence that does not divide the run still ends with a checkpoint at the last step.
    with one_process_group(tmp_path / "group-store"):
        short = MemoryContext(tmp_path / "checkpoints", ROWS)
        train(
            small_run(tmp_path, tracking_uri, len(ROWS), name="cadence", epochs=2, max_steps=5, checkpoint_every=3),
            short,
        )
    assert [step for step, _, _ in short.saved] == [3, 5]


def test_m_is_the_plans_draw_at_every_step_and_M_in_stage_1(whole, tmp_path, tracking_uri, process_group, monkeypatch):
    run, _, strategy = whole
    drawn = [s["m"] for s in strategy.steps()]
    assert drawn == [run.plan.budget(step) for step in range(STEPS)] and len(set(drawn)) > 1

    planned = {
        "other-seed": {"schedule": {"seed": 7}},
        "stage1": {"stage": "stage1", "template": "plain"},
        "elastic": {"stage": "stage1", "template": "plain", "stage1_elastic": True},
    }
    runs = {
        name: small_run(tmp_path / name, tracking_uri, len(ROWS), name=name, max_steps=4, **changes)
        for name, changes in planned.items()
    }
    # M and the schedule were resolved when the runs were planned: the loop does not derive them again.
    for name in ("token_schedule", "max_visual_tokens"):
        monkeypatch.setattr(plan_module, name, lambda *a, **k: pytest.fail("m re-derived from the specs"))
    ms = {name: [s["m"] for s in train(r, MemoryContext(tmp_path / name, ROWS)).steps()] for name, r in runs.items()}

    # The schedule's seed decides the sequence (the same seed gives the same m: the resumed runs above).
    assert ms["other-seed"] == [runs["other-seed"].plan.budget(step) for step in range(4)] != drawn[:4]
    assert ms["stage1"] == [8, 8, 8, 8]  # small_spec's M
    assert ms["elastic"] == [runs["elastic"].plan.budget(step) for step in range(4)] and set(ms["elastic"]) != {8}


def test_every_epoch_sees_every_sample_once_in_its_own_order(whole):
    _, context, strategy = whole
    epochs = [
        [i for s in strategy.steps()[e * 4 : (e + 1) * 4] for batch in s["samples"] for i in batch] for e in (0, 1)
    ]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(len(ROWS)))
    assert epochs[0] != epochs[1]  # the local shuffle is seeded per epoch
    # What a checkpoint records: micro-batches consumed in the current epoch.
    positions = {
        step: torch.load(d / "worker_rank0.pt", weights_only=False)["position"] for step, _, d in context.saved
    }
    assert positions[2] == {"epoch": 0, "batches_in_epoch": 4} and positions[6] == {"epoch": 1, "batches_in_epoch": 4}


class PartitionedStrategy(PlainTorchStrategy):
    """As under ZeRO-3, the module's own tensors are not the weights (here: zeroed once gathered); the
    full weights are what `export_state_dict` gathers."""

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        gathered = super().export_state_dict()
        self.gathered = dict(gathered)  # save_pretrained empties the dict it is given
        with torch.no_grad():
            for parameter in self.model.parameters():
                parameter.zero_()
        return gathered


def test_rank_0_exports_once_at_the_end_with_the_gathered_weights_and_the_runs_record(
    whole, tmp_path, tracking_uri, process_group
):
    run, _, strategy = whole
    assert strategy.exports == 1
    assert read_training_record(run.export_dir) == json.loads(json.dumps(resolved_config(run)))

    gathering = small_run(tmp_path / "zero3", tracking_uri, len(ROWS), name="zero3", max_steps=2)
    partitioned = PartitionedStrategy(gathering.stage, use_gpu=False)
    train_loop(gathering, MemoryContext(tmp_path / "zero3", ROWS), partitioned)
    exported = load_part_state(gathering.export_dir, CONNECTOR)
    assert exported and all(torch.equal(v, partitioned.gathered[f"connector.{k}"]) for k, v in exported.items())

    other = small_run(tmp_path / "rank1", tracking_uri, len(ROWS), name="rank1", max_steps=2)
    second = train(other, MemoryContext(tmp_path / "rank1", ROWS, rank=1))
    assert second.exports == 1  # every rank takes part in gathering the weights ...
    assert not (tmp_path / "rank1" / "rank1" / "export").exists()  # ... and only rank 0 writes them
