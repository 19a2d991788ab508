"""What every strategy saves beside its own state (mqt_llava.train.checkpoint): written, then read back equal."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from mqt_llava.train.checkpoint import (
    RUN_CONFIG,
    TRAIN_STATE,
    DataPosition,
    TrainState,
    restore_progress,
    save_progress,
)


@pytest.fixture
def rng_restored():
    """The test draws from and restores the global RNGs (as a resumed worker does): put back after."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_progress_written_then_read_gives_the_same_state_position_and_random_numbers(tmp_path, rng_restored):
    state, position, config = TrainState(7, 112, 4096), DataPosition(epoch=1, batches_in_epoch=3), {"name": "run"}
    save_progress(tmp_path, 0, state, position, config)
    save_progress(tmp_path, 1, state, DataPosition(epoch=1, batches_in_epoch=5), config)
    after_save = draws()
    draws()  # the run goes on drawing
    assert restore_progress(tmp_path, 0) == (state, position)
    assert draws() == after_save  # the RNG states are the ones at the save
    assert restore_progress(tmp_path, 1) == (state, DataPosition(epoch=1, batches_in_epoch=5))  # each rank its own
    assert json.loads((tmp_path / RUN_CONFIG).read_text()) == config


def test_only_rank_0_writes_the_shared_files(tmp_path):
    save_progress(tmp_path, 1, TrainState(1), DataPosition(), {})
    assert not (tmp_path / TRAIN_STATE).exists() and not (tmp_path / RUN_CONFIG).exists()


def test_a_checkpoint_of_another_worker_count_is_refused_by_name(tmp_path, rng_restored):
    save_progress(tmp_path, 0, TrainState(3), DataPosition(), {})
    with pytest.raises(RuntimeError, match="no state for rank 1: it was written by a different number of workers"):
        restore_progress(tmp_path, 1)
