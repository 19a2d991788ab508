"""An ablation experiment's config (a packaged `<preset>/ablation.yaml` or any YAML) and the variants
it expands to.

A variant is one point of the grid: a value for every axis declared in mqt_llava.ablation.axes
(token schedule, MQT order, key kind, elastic stage 1), a seed, and, for the paper's "independent
models for each number of tokens", a fixed training budget. The grid
is either the full factorial of the axes or the paper's one-factor-at-a-time set: the baseline, plus
one variant per non-baseline value of each axis with everything else at the baseline.

Beside the grid, `search:` declares a Ray Tune search space over any field of the model or a stage,
drawn `num_samples` times for every variant, and `scheduler:` a trial scheduler such as ASHA that
stops unpromising trials early (mqt_llava.ablation.search).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from mqt_llava.ablation.axes import AXES, axis_overrides, grid_axes, repeats_another_connector, variant_label
from mqt_llava.ablation.search import Scalar, SchedulerSpec, distribution, scheduler, search_overrides
from mqt_llava.config import ConfigError, Spec, config_path, prefixed
from mqt_llava.eval.heldout import QuestionSet, load_question_set
from mqt_llava.eval.spec import EvalSpec
from mqt_llava.model.budgets import parse_budgets


class Variant(Spec):
    """One trial's settings: a value for every axis of mqt_llava.ablation.axes (its fields, read from
    that table when a variant is made, so a registered axis is a field at once; missing ones take the
    axis's default), and the values Tune drew from `search:` for this trial (dotted field -> value).
    `fixed_tokens` (with schedule fixed): stage 2 trains at that m only."""

    model_config = ConfigDict(extra="allow", frozen=True)  # the axes' fields, checked by `_axes`

    search: dict[str, Scalar] = {}

    @model_validator(mode="before")
    @classmethod
    def _axes(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = sorted(set(data) - set(AXES) - {"search"})
        if unknown:
            raise ValueError(f"unknown axis {', '.join(unknown)}; known: {', '.join(AXES)}")
        values = {}
        for name, axis in AXES.items():
            try:
                values[name] = TypeAdapter(axis.annotation).validate_python(data.get(name, axis.default))
            except ValidationError as exc:
                reason = "; ".join(e["msg"] for e in exc.errors())
                raise ValueError(f"{name}: {data.get(name)!r} is not a value of the axis ({reason})") from None
        return values | {"search": data.get("search", {})}

    def __hash__(self) -> int:  # the axes are extra fields, which pydantic's own hash leaves out
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    @model_validator(mode="after")
    def _fixed(self):
        if self.fixed_tokens is not None and self.schedule != "fixed":
            raise ValueError("fixed_tokens needs schedule: fixed")
        if self.fixed_tokens is not None and self.fixed_tokens < 1:
            raise ValueError("fixed_tokens must be >= 1")
        return self

    def label(self, baseline: Variant) -> str:
        """A short name: what differs from the baseline (`baseline` when nothing does), the searched
        values, then the seed."""
        return variant_label(self.model_dump(), baseline.model_dump(), self.search)

    def overrides(self, part: str) -> list[str]:
        """This variant's `field=value` overrides of `part`: model, stage1 or stage2."""
        return axis_overrides(self.model_dump(), part) + search_overrides(self.search, part)


class StageRef(Spec):
    config: str  # a StageSpec YAML
    overrides: list[str] = []


class HeldoutRef(Spec):
    """Held-out questions every trial also answers (mqt_llava.eval.heldout), keeping every answer,
    with a blank-image control at M. The claims compare trials on these questions, paired."""

    questions: str = Field(description="the question set (a QuestionSet), named as package.module:attribute")
    corpus: str = Field(description="where the question set reads its held-out images")
    scenes: int = Field(600, ge=1, description="the first N held-out images (scenes) asked about")
    budgets: str = Field("M", description="every trial's budgets (a fixed-m model adds its own m)")
    curves: dict[str, str] = Field(
        {"baseline": "1,2,4,8,16,M"},
        description="variant (its label without the "
        "seed) -> its own budgets: the baseline's curve, a schedule's never-drawn m",
    )

    @field_validator("questions")
    @classmethod
    def _loads(cls, reference: str) -> str:
        load_question_set(reference)  # a bad reference fails when the spec loads, not in a trial
        return reference

    def question_set(self) -> QuestionSet:
        return load_question_set(self.questions)

    def budgets_for(self, group: str, maximum: int, fixed: int | None, minimum: int = 1) -> list[int]:
        """The group's budgets; a connector of fixed size (minimum = M) answers at M only."""
        if minimum == maximum:
            return [maximum]
        chosen = parse_budgets(self.curves.get(group, self.budgets), maximum, f"heldout budgets of {group}", minimum)
        return sorted(set(chosen) | ({fixed} if fixed else set()))


class AblationSpec(Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    storage: str = "./runs/ablation"
    model: str = "tiny"  # the stages' model preset (or a model YAML path)
    model_overrides: list[str] = []
    stage1: StageRef
    stage2: StageRef
    stage1_export: str | None = Field(
        None,
        description="an existing stage-1 export (of `stage1` as given) every trial's stage 2 starts "
        "from: no stage 1 is trained; then no variant, seed or searched field may change stage 1",
    )
    eval: EvalSpec  # every trial's sweep; its model and out are the trial's own
    heldout: HeldoutRef | None = None
    design: Literal["one_factor", "full_factorial"] = "one_factor"
    baseline: Variant = Field(default_factory=Variant)
    axes: dict[str, list] = Field(
        default_factory=lambda: {
            "schedule": ["linear", "log"],
            "order": ["attention_then_projection", "projection_then_attention"],
            "stage1_elastic": [False, True],
        }
    )
    seeds: list[int] = Field([0], min_length=1)
    fixed_budgets: list[int] = []  # extra variants: stage 2 at one fixed m each (baseline otherwise)
    max_failures: int = Field(1, ge=0, description="retries of a failed trial")
    max_concurrent_trials: int | None = Field(None, ge=1, description="default: from the cluster's CPUs")
    trial_cpus: float = Field(2.0, gt=0, description="CPUs a trial's training and evaluation use at once")
    margin: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="non-inferiority margin (a share of questions), fixed "
        "before the run: 'no worse than' claims hold when the interval stays above -margin",
    )
    search: dict[str, dict[str, Any]] = Field(
        {},
        description="a Ray Tune search space: <part>.<dotted field> -> {distribution: arguments}, "
        "e.g. stage2.lr: {loguniform: [1.0e-4, 1.0e-2]} (mqt_llava.ablation.search)",
    )
    num_samples: int = Field(1, ge=1, description="draws of the search space for every variant")
    scheduler: dict[str, Any] | None = Field(
        None, description="a Tune trial scheduler, e.g. {kind: asha, metric: loss, mode: min, max_t: 60}"
    )
    tracking_uri: str | None = None
    experiment: str = "mqt-llava-ablation"

    @model_validator(mode="after")
    def _search(self):
        for field, declared in self.search.items():
            distribution(field, declared)  # an unknown distribution or a bad argument fails here
        if self.scheduler is not None:
            scheduler(self.scheduler)
        if self.num_samples > 1 and not self.search:
            raise ValueError("num_samples > 1 needs a search space (search:); without one the samples are equal")
        if self.baseline.search:
            raise ValueError("baseline.search: the baseline holds no searched values (they are drawn per trial)")
        return self

    @model_validator(mode="after")
    def _axes(self):
        for axis, values in self.axes.items():
            if axis not in grid_axes():
                raise ValueError(f"axes.{axis}: unknown axis; known: {', '.join(grid_axes())}")
            if not values:
                raise ValueError(f"axes.{axis}: give at least one value")
            for value in values:
                Variant(**{axis: value})  # a bad value fails here, naming the axis
        return self

    @model_validator(mode="after")
    def _given_stage1(self):
        """A given stage-1 export stands for every trial's stage 1 only where no trial's differs."""
        if self.stage1_export is None:
            return self
        baseline = stage1_key(self.baseline, self)
        differ = [v.label(self.baseline) for v in self.variants() if stage1_key(v, self) != baseline]
        searched = [field for field in self.search if field.split(".")[0] in ("model", "stage1")]
        if differ or searched:
            raise ValueError(
                f"stage1_export: trials {', '.join(differ + searched)} change stage 1, so one given "
                "stage-1 export cannot stand for theirs (leave stage1_export out to train each)"
            )
        return self

    @property
    def root(self) -> Path:
        return Path(self.storage).expanduser().resolve() / self.name

    def variant(self, label: str) -> Variant:
        """The grid's variant with this label (what Tune's grid search hands a trial)."""
        found = {v.label(self.baseline): v for v in self.variants()}
        if label not in found:
            raise KeyError(f"experiment {self.name} has no variant {label!r}")
        return found[label]

    def trial_variant(self, config: dict) -> Variant:
        """A trial's variant from its Tune config: the grid's variant (`variant`, its label) with the
        values drawn from the search space (`search`)."""
        variant = self.variant(config["variant"])
        searched = config.get("search") or {}
        return Variant(**variant.model_dump(exclude={"search"}), search=searched) if searched else variant

    def param_space(self) -> dict[str, Any]:
        """Tune's param_space: the grid's labels, crossed with the search space where there is one."""
        from ray import tune

        space: dict[str, Any] = {"variant": tune.grid_search([v.label(self.baseline) for v in self.variants()])}
        if self.search:
            space["search"] = {field: distribution(field, d).domain() for field, d in self.search.items()}
        return space

    def trial_scheduler(self) -> Any:
        """The declared scheduler as a ray.tune object; None: Tune's default (every trial runs to its end)."""
        return None if self.scheduler is None else self.scheduler_spec().build()

    def scheduler_spec(self) -> SchedulerSpec | None:
        return None if self.scheduler is None else scheduler(self.scheduler)

    def trial_count(self) -> int:
        """How many trials the experiment runs: the grid's variants x num_samples x any grid in the search."""
        grids = [len(d["grid"]) for d in self.search.values() if "grid" in d]
        return len(self.variants()) * self.num_samples * math.prod(grids)

    def variants(self) -> list[Variant]:
        """The grid, in a stable order; no duplicates."""
        base = self.baseline.model_dump(exclude={"seed", "fixed_tokens"})
        points: list[dict] = []
        if self.design == "full_factorial":
            names = list(self.axes)
            points = [base | dict(zip(names, combo, strict=True)) for combo in itertools.product(*self.axes.values())]
            # Another connector crossed with MQT options would repeat that connector's trial.
            points = [p for p in points if not repeats_another_connector(p, base)]
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


def stage_run(variant: Variant, spec: AblationSpec, stage: str) -> tuple[str, list[str]]:
    """The config and every override a variant's stage runs with: what the trial hands resolve_run
    (stage 2 adds its `init_from`), and, for stage 1, exactly what `stage1_key` hashes."""
    ref = getattr(spec, stage)
    model = [f"model={spec.model}", *prefixed("model", spec.model_overrides + variant.overrides("model"))]
    return ref.config, ref.overrides + variant.overrides(stage) + model


def stage1_key(variant: Variant, spec: AblationSpec) -> str:
    """Trials whose stage 1 would be the same run share it: keyed by everything stage 1 is given
    (its config file, by path and content, the model preset and every override it runs with)."""
    config, overrides = stage_run(variant, spec, "stage1")
    try:
        text = config_path(config).read_text()
    except ConfigError:
        text = None  # checked when the stage resolves; the path alone keys it meanwhile
    settings = {"config": config, "config_text": text, "overrides": overrides}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
