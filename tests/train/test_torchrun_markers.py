"""Runs without Ray (mqt_llava.train.torchrun, mqt_llava.train.context.TorchrunContext): a checkpoint
counts once rank 0 has marked it complete after every rank saved; a rank that died while saving
leaves an unmarked directory that resuming never takes; the newest `keep` complete ones are kept."""

from __future__ import annotations

import json

import pytest
from core_fakes import MemoryShard, PlainTorchStrategy, small_run, training_rows

from mqt_llava.train.context import COMPLETE, TorchrunContext
from mqt_llava.train.loop import train_loop
from mqt_llava.train.torchrun import run_with_torchrun, under_torchrun


@pytest.fixture
def rank_zero_of_one(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")


def context(tmp_path, keep: int, shard=None) -> TorchrunContext:
    return TorchrunContext(str(tmp_path / "run"), shard, keep=keep, use_gpu=False)


def restored(ctx: TorchrunContext):
    with ctx.restored() as directory:
        return directory


def test_a_checkpoint_counts_once_marked_complete_and_the_newest_keep_are_kept(
    tmp_path, rank_zero_of_one, process_group
):
    ctx = context(tmp_path, keep=2)
    assert restored(ctx) is None  # a fresh run
    for step in (2, 4, 6):
        with ctx.checkpoint(step, {"loss": 1.0 / step}) as directory:
            (directory / "weights").write_text(str(step))
            assert not (directory / COMPLETE).exists()  # not before every rank's part is on disk
    assert [p.name for p in ctx.complete()] == ["checkpoint_0000004", "checkpoint_0000006"]
    assert sorted(p.name for p in ctx.root.iterdir()) == ["checkpoint_0000004", "checkpoint_0000006"]
    assert json.loads((ctx.root / "checkpoint_0000006" / COMPLETE).read_text()) == {"loss": 1.0 / 6, "step": 6}
    assert restored(ctx) == ctx.root / "checkpoint_0000006"


def test_a_checkpoint_whose_saving_died_is_never_resumed_from(tmp_path, rank_zero_of_one, process_group):
    ctx = context(tmp_path, keep=2)
    with ctx.checkpoint(2, {}) as directory:
        (directory / "weights").write_text("2")
    with pytest.raises(OSError), ctx.checkpoint(4, {}) as directory:
        raise OSError("the disk filled up while this rank saved")  # the rank dies mid-save
    assert (ctx.root / "checkpoint_0000004").is_dir() and not (ctx.root / "checkpoint_0000004" / COMPLETE).exists()
    assert restored(ctx) == ctx.root / "checkpoint_0000002"
    # Another process (a later attempt) sees the same: the unmarked directory does not count.
    assert restored(context(tmp_path, keep=2)) == ctx.root / "checkpoint_0000002"


def test_a_finished_run_resubmitted_resumes_at_its_last_step_and_only_exports_again(
    tmp_path, tracking_uri, rank_zero_of_one, process_group, capsys
):
    rows = training_rows(8)
    run = small_run(tmp_path, tracking_uri, len(rows), name="tr", checkpoint_every=1, keep_checkpoints=1)
    first = PlainTorchStrategy(run.stage, use_gpu=False)
    train_loop(run, context(tmp_path, keep=1, shard=MemoryShard(rows)), first)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == [f"checkpoint_{run.plan.total_steps:07d}"]
    again = PlainTorchStrategy(run.stage, use_gpu=False)
    train_loop(run, context(tmp_path, keep=1, shard=MemoryShard(rows)), again)
    assert f"[tr] resumed at step {run.plan.total_steps}/{run.plan.total_steps}" in capsys.readouterr().out
    assert again.micro_batches == [] and again.exports == 1


def test_torchrun_is_recognised_by_its_run_id_and_a_rank_count_other_than_num_workers_refused(
    tmp_path, tracking_uri, monkeypatch
):
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert not under_torchrun()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    assert under_torchrun()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = small_run(tmp_path, tracking_uri, 16, name="tr")  # num_workers 1
    with pytest.raises(SystemExit, match="num_workers is 1 but torchrun started 2 processes"):
        run_with_torchrun(run)
