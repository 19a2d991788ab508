"""The ablation axes, each declared once: its values (the option's own type), the spec fields it
sets (in the model preset, stage 1's spec or stage 2's), and its short label. Everything else is
derived from this table when it is read: the fields of a `Variant` (mqt_llava.ablation.spec), the
names `axes:` accepts, a variant's overrides for each stage, whether an axis touches stage 1 (so which
trials may share one), and the labels in reports.

A new axis is one entry here, or one `register_axis` call (values from the option it varies, where
that option is declared).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from mqt_llava.config import override_value
from mqt_llava.model.connectors import CONNECTORS
from mqt_llava.model.connectors.mqt import MQTOptions
from mqt_llava.train.spec import ScheduleSpec

PARTS = ("model", "stage1", "stage2")  # what an override can reach; "model" is seen by both stages


@dataclass(frozen=True)
class Axis:
    annotation: Any  # the values' type (a Literal, bool, int)
    default: Any
    sets: dict[str, tuple[str, ...]]  # part -> the dotted fields it sets there
    label: Callable[[Any], str] = str
    grid: bool = True  # False: a field of every variant, not an axis of the `axes:` grid (seed, fixed_tokens)
    assign: Callable[[Any], Any] = lambda value: value  # what each field in `sets` is set to; None: left alone

    @property
    def touches_stage1(self) -> bool:
        return bool(set(self.sets) & {"model", "stage1"})

    @property
    def values(self) -> tuple:
        return (False, True) if self.annotation is bool else get_args(self.annotation)


def option_type(spec_class, name: str):
    return spec_class.model_fields[name].annotation


SHORT = {
    "attention_then_projection": "attn-proj",
    "projection_then_attention": "proj-attn",
    "content_and_position": "content-keys",
    "position_only": "position-keys",
    "normalised_content_and_position": "normalised-keys",
}

AXES: dict[str, Axis] = {
    "schedule": Axis(
        option_type(ScheduleSpec, "kind"), "linear", {"stage2": ("schedule.kind",)}, lambda v: f"{v}-schedule"
    ),
    "order": Axis(
        option_type(MQTOptions, "order"), "attention_then_projection", {"model": ("connector.order",)}, SHORT.get
    ),
    "stage1_elastic": Axis(
        bool, False, {"stage1": ("stage1_elastic",)}, lambda v: f"elastic-stage1-{'on' if v else 'off'}"
    ),
    "keys": Axis(option_type(MQTOptions, "keys"), "content_and_position", {"model": ("connector.keys",)}, SHORT.get),
    # The connector kind: `mqt` keeps the preset's MQT and its options; another kind replaces the whole
    # `connector:` section by that kind's defaults (`mlp`: LLaVA-1.5's two-layer MLP over all N features).
    "connector": Axis(
        Literal[tuple(CONNECTORS)],
        "mqt",
        {"model": ("connector",)},
        lambda v: f"{v}-connector",
        assign=lambda v: None if v == "mqt" else {"kind": v},
    ),
    "seed": Axis(
        int,
        0,
        {"stage1": ("seed", "schedule.seed"), "stage2": ("schedule.seed", "seed")},
        lambda v: f"seed{v}",
        grid=False,
    ),
    # The paper's "independent models for each number of tokens": stage 2 at one m only (with schedule fixed).
    "fixed_tokens": Axis(int | None, None, {"stage2": ("schedule.tokens",)}, lambda v: f"fixed-m{v}", grid=False),
}


def register_axis(name: str, axis: Axis) -> Axis:
    """Adds an axis: from here on every variant has the field, and `axes:` accepts the name."""
    if name in AXES:
        raise ValueError(f"ablation axis {name!r} exists already")
    if not set(axis.sets) <= set(PARTS):
        raise ValueError(f"axis {name!r} sets parts {sorted(set(axis.sets) - set(PARTS))}; known: {', '.join(PARTS)}")
    AXES[name] = axis
    return axis


def grid_axes() -> tuple[str, ...]:
    """The axes `axes:` may vary (seed and fixed_tokens are set otherwise)."""
    return tuple(name for name, axis in AXES.items() if axis.grid)


def mqt_option_axes() -> tuple[str, ...]:
    """The axes that set options inside the MQT's `connector:` section."""
    return tuple(
        name for name, axis in AXES.items() if any(key.startswith("connector.") for key in axis.sets.get("model", ()))
    )


def repeats_another_connector(values: dict[str, Any], baseline: dict[str, Any]) -> bool:
    """A variant whose connector is not the MQT, with an MQT option other than the baseline's: that
    option never reaches its connector (the section is replaced), so the trial would repeat the one
    with the baseline's options."""
    return values["connector"] != "mqt" and any(values[n] != baseline[n] for n in mqt_option_axes())


def axis_overrides(values: dict[str, Any], part: str) -> list[str]:
    """The `field=value` overrides a variant's values make in `part` (model, stage1 or stage2)."""
    out = []
    for name, axis in AXES.items():
        value = axis.assign(values[name])
        if value is None:
            continue  # the preset's own (no fixed budget: the schedule's own support; the preset's MQT)
        out += [f"{key}={override_value(value)}" for key in axis.sets.get(part, ())]
    return out


def variant_label(values: dict[str, Any], baseline: dict[str, Any], searched: dict[str, Any] | None = None) -> str:
    """What differs from the baseline, by grid axis, then any values Tune drew from the search space,
    then the seed: `log-schedule+proj-attn/seed0`, `stage2.lr=0.00123/seed0`. A fixed training budget
    names the variant by its m (`fixed-m8`) instead of its schedule."""
    parts = []
    for name in grid_axes():
        if values[name] == baseline[name]:
            continue
        if name == "schedule" and values["fixed_tokens"] is not None:
            parts.append(AXES["fixed_tokens"].label(values["fixed_tokens"]))
        else:
            parts.append(AXES[name].label(values[name]))
    parts += [
        f"{key}={value:.6g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in sorted((searched or {}).items())
    ]
    return f"{'+'.join(parts) or 'baseline'}/{AXES['seed'].label(values['seed'])}"
