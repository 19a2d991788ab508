"""An ablation experiment's config (`configs/<preset>/ablation.yaml`) and the variants it expands to.

A variant is one point of the grid: token schedule, MQT order, key kind, elastic stage 1, seed (and,
for the paper's "independent models for each number of tokens", a fixed training budget). The grid
is either the full factorial of the axes or the paper's one-factor-at-a-time set: the baseline, plus
one variant per non-baseline value of each axis with everything else at the baseline.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mqt_llava.config import Spec

Schedule = Literal["linear", "log", "fixed"]
Order = Literal["attention_then_projection", "projection_then_attention"]
Keys = Literal["content_and_position", "position_only"]
AXES = ("schedule", "order", "stage1_elastic", "keys")
SHORT = {"attention_then_projection": "attn-proj", "projection_then_attention": "proj-attn",
         "content_and_position": "content-keys", "position_only": "position-keys"}  # fmt: skip


class Variant(Spec):
    """One trial's settings. `fixed_tokens` (with schedule fixed): stage 2 trains at that m only."""

    schedule: Schedule = "linear"
    order: Order = "attention_then_projection"
    stage1_elastic: bool = False
    keys: Keys = "content_and_position"
    seed: int = 0
    fixed_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _fixed(self):
        if self.fixed_tokens is not None and self.schedule != "fixed":
            raise ValueError("fixed_tokens needs schedule: fixed")
        return self

    def label(self, baseline: Variant) -> str:
        """A short name: what differs from the baseline (`baseline` when nothing does), then the seed."""
        parts = []
        for axis in AXES:
            value = getattr(self, axis)
            if value != getattr(baseline, axis):
                if axis == "stage1_elastic":
                    parts.append(f"elastic-stage1-{'on' if value else 'off'}")
                elif axis == "schedule" and self.fixed_tokens is not None:
                    parts.append(f"fixed-m{self.fixed_tokens}")
                else:
                    parts.append(SHORT.get(value, f"{value}-schedule"))
        return f"{'+'.join(parts) or 'baseline'}/seed{self.seed}"

    def stage1_settings(self) -> dict:
        """What stage 1 depends on: trials equal here share one stage-1 run."""
        return {"order": self.order, "keys": self.keys, "stage1_elastic": self.stage1_elastic, "seed": self.seed}

    def model_overrides(self) -> list[str]:
        return [f"mqt.order={self.order}", f"mqt.keys={self.keys}"]

    def stage2_overrides(self) -> list[str]:
        tokens = [f"schedule.tokens={self.fixed_tokens}"] if self.fixed_tokens is not None else []
        return [f"schedule.kind={self.schedule}", f"schedule.seed={self.seed}", f"seed={self.seed}", *tokens]

    def stage1_overrides(self) -> list[str]:
        return [f"stage1_elastic={str(self.stage1_elastic).lower()}", f"seed={self.seed}", f"schedule.seed={self.seed}"]


class StageRef(Spec):
    config: str  # a StageSpec YAML
    overrides: list[str] = []


class EvalRef(Spec):
    """The evaluation sweep every trial runs (mqt_llava.eval.runner.SweepConfig's fields)."""

    data_root: str
    benchmarks: list[str] = Field(min_length=1)
    budgets: str = "M"  # comma-separated, M = the model's maximum
    limit: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    actors: int = Field(1, ge=1)
    actor_cpus: float = Field(0.5, gt=0)
    torch_threads: int | None = Field(1, ge=1)
    advisor_points: float = Field(1.0, ge=0)
    heldout_corpus: str | None = None  # a synthetic corpus: its held-out questions by kind at every budget
    heldout_scenes: int = Field(300, ge=1)


class AblationSpec(Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    storage: str = "./runs/ablation"
    model: str = "tiny"  # the stages' model preset (or a model YAML path)
    model_overrides: list[str] = []
    stage1: StageRef
    stage2: StageRef
    eval: EvalRef
    design: Literal["one_factor", "full_factorial"] = "one_factor"
    baseline: Variant = Variant()
    axes: dict[Literal["schedule", "order", "stage1_elastic", "keys"], list] = Field(
        default_factory=lambda: {
            "schedule": ["linear", "log"],
            "order": ["attention_then_projection", "projection_then_attention"],
            "stage1_elastic": [False, True],
        }  # fmt: skip
    )
    seeds: list[int] = Field([0], min_length=1)
    fixed_budgets: list[int] = []  # extra variants: stage 2 at one fixed m each (baseline otherwise)
    max_failures: int = Field(1, ge=0, description="retries of a failed trial")
    max_concurrent_trials: int | None = Field(None, ge=1, description="default: from the cluster's CPUs")
    trial_cpus: float = Field(2.0, gt=0, description="CPUs a trial's training and evaluation use at once")
    claim_tolerance: float = Field(1.0, ge=0, description="points a difference must exceed to count")
    tracking_uri: str | None = None
    experiment: str = "mqt-llava-ablation"

    @model_validator(mode="after")
    def _axes(self):
        for axis, values in self.axes.items():
            if not values:
                raise ValueError(f"axes.{axis}: give at least one value")
            for value in values:
                Variant(**{axis: value})  # a bad value fails here, naming the axis
        return self

    @property
    def root(self) -> Path:
        return Path(self.storage).expanduser().resolve() / self.name

    def variants(self) -> list[Variant]:
        """The grid, in a stable order; no duplicates."""
        base = self.baseline.model_dump(exclude={"seed", "fixed_tokens"})
        points: list[dict] = []
        if self.design == "full_factorial":
            names = list(self.axes)
            points = [base | dict(zip(names, combo, strict=True)) for combo in itertools.product(*self.axes.values())]
        else:
            points = [base] + [
                base | {axis: v} for axis, values in self.axes.items() for v in values if v != base[axis]
            ]
        points += [base | {"schedule": "fixed", "fixed_tokens": m} for m in self.fixed_budgets]
        out: list[Variant] = []
        for seed in self.seeds:
            for point in points:
                variant = Variant(**point, seed=seed)
                if variant not in out:
                    out.append(variant)
        return out


def stage1_key(variant: Variant, spec: AblationSpec) -> str:
    """Trials whose stage 1 would be the same run share it: keyed by everything stage 1 reads."""
    settings = variant.stage1_settings() | {
        "config": spec.stage1.config, "overrides": spec.stage1.overrides,
        "model": spec.model, "model_overrides": spec.model_overrides,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
