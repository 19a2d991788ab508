"""What a training checkpoint holds beyond DeepSpeed's own state, and how it is saved and restored.

One checkpoint directory (Ray merges what every rank writes into it); the strategy's own state
(mqt_llava.train.strategies) first, here the DeepSpeed strategy's, then what every strategy saves
(`save_progress`):

    ckpt/...                       DeepSpeed: the trainable weights, each rank's ZeRO optimizer shard,
                                   the LR scheduler, DeepSpeed's step counters. Frozen parameters (the
                                   vision tower; in stage 1 the LLM too, ~14 GB in bf16 at 7B) are left
                                   out: the run reloads them from their pretrained source.
    train_state.json               rank 0: the optimizer step, samples and tokens seen
    run.json                       rank 0: the run's resolved config (mqt_llava.train.plan), so any
                                   checkpoint can be turned into an export (jobs/export_checkpoint.py)
    worker_rank<r>.pt              each rank: its RNG states and data position

The data position is each rank's (epoch, micro-batches consumed in that epoch). Ray Data cannot
seek into a stream, so a resumed rank starts that epoch's pass again (same file order, same local
shuffle seed) and discards that many micro-batches before training. Ray Data's streaming split
hands blocks to ranks dynamically, so the skipped micro-batches are the same *number* of samples,
not guaranteed to be the same samples: the run sees every step's worth of data once per epoch,
but the exact order after a restart can differ.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

DEEPSPEED_TAG = "ckpt"
TRAIN_STATE = "train_state.json"
RUN_CONFIG = "run.json"


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    samples: int = 0  # over all ranks
    tokens: int = 0  # over all ranks, visual tokens included


@dataclass
class DataPosition:
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches this rank consumed in `epoch`


def capture_rng() -> dict:
    return dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    )


def restore_rng(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_progress(directory: Path, rank: int, state: TrainState, position: DataPosition, config: dict) -> None:
    """What every strategy saves beside its own state: each rank its RNG states and data position;
    rank 0 the step reached and the run's config."""
    torch.save(dict(rng=capture_rng(), position=asdict(position)), directory / f"worker_rank{rank}.pt")
    if rank == 0:
        (directory / TRAIN_STATE).write_text(json.dumps(asdict(state)))
        (directory / RUN_CONFIG).write_text(json.dumps(config, indent=2))


def worker_file(directory: Path, rank: int) -> Path:
    """This rank's file in a checkpoint; refused when absent (a checkpoint of another worker count)."""
    path = directory / f"worker_rank{rank}.pt"
    if not path.exists():
        raise RuntimeError(
            f"checkpoint {directory} has no state for rank {rank}: it was written by a different number of "
            "workers (optimizer shards and data positions are per rank); resume with the original num_workers"
        )
    return path


def restore_progress(directory: Path, rank: int) -> tuple[TrainState, DataPosition]:
    """The counterpart of save_progress: restores this rank's RNG states; returns the step reached and
    this rank's data position."""
    worker = torch.load(worker_file(directory, rank), weights_only=False)
    restore_rng(worker["rng"])
    state = TrainState(**json.loads((directory / TRAIN_STATE).read_text()))
    return state, DataPosition(**worker["position"])


def save(engine, directory: Path, rank: int, state: TrainState, position: DataPosition, config: dict) -> None:
    """DeepSpeed's checkpoint plus the progress; every rank calls this (DeepSpeed's save is collective)."""
    engine.save_checkpoint(str(directory), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True)
    save_progress(directory, rank, state, position, config)


def saved_weight_names(directory: Path) -> set[str]:
    """The parameter names DeepSpeed saved under `directory` (rank 0's model-states file: ZeRO-2
    writes one, ZeRO-3 one per rank, each naming every saved parameter)."""
    files = sorted((directory / DEEPSPEED_TAG).glob("*model_states.pt"))
    if not files:
        raise RuntimeError(f"DeepSpeed found no checkpoint under {directory}/{DEEPSPEED_TAG}")
    return set(torch.load(files[0], map_location="cpu", weights_only=False)["module"])


def restore(engine, directory: Path, rank: int) -> tuple[TrainState, DataPosition]:
    """Every rank calls this. A checkpoint written by a different number of workers cannot be
    restored: ZeRO shards the optimizer by rank (refused before DeepSpeed reads anything)."""
    worker_file(directory, rank)
    trainable = {name for name, p in engine.module.named_parameters() if p.requires_grad}
    if missing := sorted(trainable - saved_weight_names(directory)):
        raise RuntimeError(
            f"checkpoint {directory} lacks {len(missing)} weight(s) this run trains ({missing[:3]}...): it was "
            "written by another stage (or model); resume with the run that wrote it"
        )
    # Not strict: frozen weights are not in the checkpoint (they were loaded from their pretrained source).
    path, _ = engine.load_checkpoint(str(directory), tag=DEEPSPEED_TAG, load_module_strict=False)
    if path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint under {directory}/{DEEPSPEED_TAG}")
    return restore_progress(directory, rank)
