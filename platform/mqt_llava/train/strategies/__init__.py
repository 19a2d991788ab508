"""Training strategies: what does the optimizer steps for the training loop (mqt_llava.train.loop),
behind a few verbs (join the process group, set up, train a micro-batch, save, load, export the
state dict), so the loop knows neither the library that steps nor which launcher started the process.

A strategy kind is one file: a `TrainingStrategy` subclass with a `kind` name, registered with
`@register_strategy`. Its module is imported below (the one registration line). A stage names its
kind (`strategy: deepspeed`, the default, in a stage YAML); the worker builds it with
`build_strategy` and hands it to the loop, so nothing else changes for a new kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from mqt_llava.train.checkpoint import DataPosition, TrainState

if TYPE_CHECKING:  # the plan and the spec import this registry's names; only their types are needed here
    from mqt_llava.train.plan import StagePlan
    from mqt_llava.train.spec import StageSpec


class TrainingStrategy:
    """One rank's optimizer steps. Every rank builds the same kind and calls the same verbs in the
    same order (any of them may be collective)."""

    kind: ClassVar[str]

    def __init__(self, stage: StageSpec, use_gpu: bool) -> None:
        self.stage, self.use_gpu = stage, use_gpu

    def init_distributed(self) -> None:
        """Join the process group (Ray Train's, already set up, or torchrun's, from its environment)."""
        raise NotImplementedError

    def setup(self, model: nn.Module, plan: StagePlan) -> None:
        """Take the model (its trainable parameters already chosen) and build the optimizer and the LR
        schedule over `plan.total_steps` steps with `plan.warmup_steps` of warmup."""
        raise NotImplementedError

    @property
    def lr(self) -> float:
        """The learning rate the next optimizer step uses."""
        raise NotImplementedError

    def train_micro_batch(self, batch: dict[str, torch.Tensor], num_visual_tokens: int) -> float:
        """Forward and backward of one micro-batch at m = `num_visual_tokens`; on the last micro-batch of
        each `stage.gradient_accumulation_steps` it also steps the optimizer and the schedule. Returns
        the loss."""
        raise NotImplementedError

    def grad_norm(self) -> float | None:
        """The last optimizer step's gradient norm, None where it is not known."""
        return None

    def save(self, directory: Path, rank: int, state: TrainState, position: DataPosition, config: dict) -> None:
        """Every rank saves its part of a checkpoint into `directory`, with the run's `config` beside it
        (mqt_llava.train.checkpoint says what a checkpoint holds)."""
        raise NotImplementedError

    def load(self, directory: Path, rank: int) -> tuple[TrainState, DataPosition]:
        """Every rank restores its part of the checkpoint in `directory`: the weights it trains, the
        optimizer, the schedule and the RNG states; returns the step reached and this rank's data position."""
        raise NotImplementedError

    def export_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Every rank calls it before rank 0 exports: the full weights where they are spread over the
        ranks, else None (the model's own are exported)."""
        return None


STRATEGIES: dict[str, type[TrainingStrategy]] = {}


def register_strategy(cls: type[TrainingStrategy]) -> type[TrainingStrategy]:
    if cls.kind in STRATEGIES and STRATEGIES[cls.kind] is not cls:
        raise ValueError(f"training strategy {cls.kind!r} is registered twice ({STRATEGIES[cls.kind]} and {cls})")
    STRATEGIES[cls.kind] = cls
    return cls


def strategy_class(kind: str) -> type[TrainingStrategy]:
    if kind not in STRATEGIES:
        raise ValueError(f"training strategy {kind!r} is not registered; known: {sorted(STRATEGIES)}")
    return STRATEGIES[kind]


def build_strategy(stage: StageSpec, use_gpu: bool) -> TrainingStrategy:
    """The stage's strategy (`stage.strategy`), for this worker's device."""
    return strategy_class(stage.strategy)(stage, use_gpu)


# One line per strategy kind: importing its module registers it.
from mqt_llava.train.strategies import deepspeed  # noqa: E402, F401
