"""The training-strategy registry (mqt_llava.train.strategies): a stage names its kind, DeepSpeed is
the default, an unknown kind is refused naming the known ones, and a new kind needs its file and its
registration only (docs/extending.md, "A training strategy")."""

from __future__ import annotations

import pytest
import torch
from core_fakes import MemoryContext, PlainTorchStrategy, small_run, training_rows

from mqt_llava.config import ConfigError, load_config
from mqt_llava.model.export import load_part_state
from mqt_llava.model.stages import CONNECTOR
from mqt_llava.train import strategies
from mqt_llava.train.loop import train_loop, worker_setup
from mqt_llava.train.spec import StageSpec
from mqt_llava.train.strategies import STRATEGIES, build_strategy, register_strategy, strategy_class


def test_deepspeed_is_registered_and_the_default_of_every_packaged_stage():
    from mqt_llava.train.strategies.deepspeed import DeepSpeedStrategy

    assert strategy_class("deepspeed") is DeepSpeedStrategy
    for config in ("tiny/stage1", "tiny/stage2", "llava-7b/stage1", "llava-7b/stage2"):
        assert load_config(StageSpec, config).strategy == "deepspeed"


def test_an_unregistered_strategy_is_refused_naming_the_known_kinds():
    with pytest.raises(ConfigError, match=r"strategy: .*'fsdp' is not registered; known: \['deepspeed'\]"):
        load_config(StageSpec, "tiny/stage2", ["strategy=fsdp"])


@pytest.fixture
def registry(monkeypatch):
    """The registry as it is, restored after the test registers a kind."""
    monkeypatch.setattr(strategies, "STRATEGIES", dict(STRATEGIES))


def test_a_toy_strategy_trains_through_its_registration_alone(registry, tmp_path, tracking_uri, process_group):
    @register_strategy
    class ToyStrategy(PlainTorchStrategy):  # the new kind's file: its class, registered
        kind = "toy"

    rows = training_rows(8)
    run = small_run(tmp_path, tracking_uri, len(rows), name="toy", strategy="toy", epochs=2, max_steps=3)
    context = MemoryContext(tmp_path / "checkpoints", rows)
    strategy = worker_setup(run, context)  # what the launchers do, from the stage's `strategy`
    assert type(strategy) is ToyStrategy and type(build_strategy(run.stage, use_gpu=False)) is ToyStrategy
    train_loop(run, context, strategy)
    assert len(strategy.steps()) == 3 and [step for step, _, _ in context.saved] == [3]
    exported = load_part_state(run.export_dir, CONNECTOR)
    assert all(torch.equal(v, strategy.model.state_dict()[f"connector.{k}"]) for k, v in exported.items())


def test_a_kind_registered_twice_is_refused(registry):
    class Other(PlainTorchStrategy):
        kind = "deepspeed"

    with pytest.raises(ValueError, match="registered twice"):
        register_strategy(Other)
