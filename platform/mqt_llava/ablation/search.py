"""The ablation's Ray Tune search space and trial scheduler, declared as data in its YAML:

    search:                                    # dotted fields of model / stage1 / stage2 -> a distribution
      stage2.lr: {loguniform: [1.0e-4, 1.0e-2]}
      stage2.warmup_ratio: {choice: [0.0, 0.03]}
    num_samples: 4                             # draws of the search space for every variant of the grid
    scheduler: {kind: asha, metric: loss, mode: min, time_attr: step, grace_period: 10, max_t: 60}

A distribution is `{<name>: [arguments]}` (or `{<name>: {argument: value}}`), a scheduler a mapping with
its `kind`; both are validated when the spec loads (an unknown name is an error listing the known
ones) and become ray.tune objects only when the experiment starts. Each is one class registered here:
a new distribution is a `Distribution` subclass with `@register_distribution`, a new scheduler a
`SchedulerSpec` subclass with `@register_scheduler`.

Schedulers act on what trials report while they run: stage 2's training metrics (loss, lr, m,
epoch, step) at each of its checkpoints (`checkpoint_every` sets how often), and the trial's final
result, which repeats them beside its scores.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator

from mqt_llava.config import Spec

DISTRIBUTIONS: dict[str, type[Distribution]] = {}
SCHEDULERS: dict[str, type[SchedulerSpec]] = {}
SEARCHABLE_PARTS = ("model", "stage1", "stage2")


def register_distribution(cls: type[Distribution]) -> type[Distribution]:
    """Makes `{<cls.name>: ...}` a distribution `search:` accepts; usable as a class decorator."""
    if DISTRIBUTIONS.get(cls.name, cls) is not cls:
        raise ValueError(f"distribution {cls.name!r} is registered already")
    DISTRIBUTIONS[cls.name] = cls
    return cls


def register_scheduler(cls: type[SchedulerSpec]) -> type[SchedulerSpec]:
    """Makes `scheduler: {kind: <kind>, ...}` a scheduler the ablation accepts; usable as a decorator."""
    kind = cls.model_fields["kind"].default
    if SCHEDULERS.get(kind, cls) is not cls:
        raise ValueError(f"scheduler {kind!r} is registered already")
    SCHEDULERS[kind] = cls
    return cls


class Distribution(Spec):
    """One searched value's distribution; `domain()` is its ray.tune search-space object."""

    name: ClassVar[str]

    def domain(self) -> Any:
        raise NotImplementedError

    @classmethod
    def from_arguments(cls, arguments: Any) -> Distribution:
        """From the YAML's arguments: a list (the fields in their declared order) or a mapping."""
        if isinstance(arguments, dict):
            return cls(**arguments)
        if not isinstance(arguments, list | tuple):
            arguments = [arguments]
        names = list(cls.model_fields)
        if len(arguments) > len(names):
            raise ValueError(f"{cls.name} takes {len(names)} argument(s) ({', '.join(names)}), not {len(arguments)}")
        return cls(**dict(zip(names, arguments, strict=False)))


class Bounded(Spec):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


@register_distribution
class Uniform(Distribution, Bounded):
    name = "uniform"

    def domain(self) -> Any:
        from ray import tune

        return tune.uniform(self.low, self.high)


@register_distribution
class LogUniform(Distribution, Bounded):
    name = "loguniform"
    low: float = Field(gt=0)

    def domain(self) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high)


@register_distribution
class RandInt(Distribution):
    """An integer in low..high, both included (tune.randint excludes its upper bound)."""

    name = "randint"
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must not be above high ({self.high})")
        return self

    def domain(self) -> Any:
        from ray import tune

        return tune.randint(self.low, self.high + 1)


Scalar = bool | int | float | str


@register_distribution
class Choice(Distribution):
    """One of the values, drawn uniformly."""

    name = "choice"
    values: list[Scalar] = Field(min_length=1)

    @classmethod
    def from_arguments(cls, arguments: Any) -> Distribution:
        return cls(values=arguments) if isinstance(arguments, list) else super().from_arguments(arguments)

    def domain(self) -> Any:
        from ray import tune

        return tune.choice(self.values)


@register_distribution
class Grid(Choice):
    """Every value, each in its own trials (multiplied by num_samples like the rest)."""

    name = "grid"

    def domain(self) -> Any:
        from ray import tune

        return tune.grid_search(self.values)


def distribution(field: str, declared: Any) -> Distribution:
    """`search:`'s entry for `field`, validated: `{<name>: arguments}` with a registered name."""
    part = field.split(".", 1)[0]
    if part not in SEARCHABLE_PARTS or "." not in field:
        raise ValueError(
            f"search.{field}: name a field as <part>.<dotted field>, the part one of {', '.join(SEARCHABLE_PARTS)}"
        )
    if not isinstance(declared, dict) or len(declared) != 1:
        raise ValueError(f"search.{field}: give one distribution as {{name: arguments}}, not {declared!r}")
    ((name, arguments),) = declared.items()
    if name not in DISTRIBUTIONS:
        raise ValueError(f"search.{field}: unknown distribution {name!r}; known: {', '.join(sorted(DISTRIBUTIONS))}")
    try:
        return DISTRIBUTIONS[name].from_arguments(arguments)
    except ValidationError as exc:
        raise ValueError(f"search.{field}: {name}: {reasons(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"search.{field}: {name}: {exc}") from None


def reasons(exc: ValidationError) -> str:
    """A validation error in one line: `field: what is wrong` for each."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())


def search_overrides(values: dict[str, Any], part: str) -> list[str]:
    """A trial's searched values in `part` as `field=value` overrides (`stage2.lr` -> `lr=...`)."""
    from mqt_llava.config import override_value

    prefix = f"{part}."
    return [f"{key[len(prefix) :]}={override_value(v)}" for key, v in sorted(values.items()) if key.startswith(prefix)]


class SchedulerSpec(Spec):
    """A Tune trial scheduler; `build()` is its ray.tune object. `metric` and `mode` name what it
    compares: a metric every report of a trial carries (stage 2's training metrics: loss, lr, ...)."""

    kind: str
    metric: str
    mode: Literal["min", "max"]

    def build(self) -> Any:
        raise NotImplementedError


@register_scheduler
class ASHASpec(SchedulerSpec):
    """Asynchronous successive halving (ray.tune's ASHAScheduler): at each rung (grace_period,
    grace_period x reduction_factor, ... up to max_t, in `time_attr`) a trial continues only when its
    metric is in the best 1/reduction_factor of the trials that reached the rung. A trial that
    reaches max_t is not stopped for it (ASHA's default would stop it there, before its evaluation)."""

    kind: Literal["asha"] = "asha"
    time_attr: str = Field("step", description="the progress a rung counts in: stage 2's optimizer step")
    grace_period: int = Field(1, ge=1, description="no trial is stopped before this much progress")
    max_t: int = Field(ge=1, description="the most progress a trial makes (stage 2's steps): the last rung")
    reduction_factor: float = Field(4.0, gt=1)

    @model_validator(mode="after")
    def _rungs(self):
        if self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must not exceed max_t ({self.max_t})")
        return self

    def build(self) -> Any:
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr=self.time_attr,
            metric=self.metric,
            mode=self.mode,
            max_t=self.max_t,
            grace_period=self.grace_period,
            reduction_factor=self.reduction_factor,
            stop_last_trials=False,
        )


@register_scheduler
class MedianStoppingSpec(SchedulerSpec):
    """ray.tune's MedianStoppingRule: a trial stops when its best result so far is worse than the
    median of the other trials' running averages at the same progress."""

    kind: Literal["median_stopping"] = "median_stopping"
    time_attr: str = "step"
    grace_period: float = Field(1, ge=0)
    min_samples_required: int = Field(3, ge=1)

    def build(self) -> Any:
        from ray.tune.schedulers import MedianStoppingRule

        return MedianStoppingRule(
            time_attr=self.time_attr,
            metric=self.metric,
            mode=self.mode,
            grace_period=self.grace_period,
            min_samples_required=self.min_samples_required,
        )


def scheduler(declared: dict[str, Any]) -> SchedulerSpec:
    """`scheduler:` validated: a mapping whose `kind` is registered."""
    if not isinstance(declared, dict) or "kind" not in declared:
        raise ValueError(f"scheduler: give a mapping with its kind ({', '.join(sorted(SCHEDULERS))}), not {declared!r}")
    kind = declared["kind"]
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler: unknown kind {kind!r}; known: {', '.join(sorted(SCHEDULERS))}")
    try:
        return SCHEDULERS[kind](**declared)
    except ValidationError as exc:
        raise ValueError(f"scheduler ({kind}): {reasons(exc)}") from None
