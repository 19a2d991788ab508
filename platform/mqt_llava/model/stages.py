"""Which parts train in which stage. The vision tower is frozen in every stage; within a trained
connector, the connector itself names what a stage keeps fixed (`Connector.fixed_parameters`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

CONNECTOR = "connector"  # the model's attribute, and its weights' prefix in an export, for any connector kind
PARTS: tuple[str, ...] = ("vision_tower", CONNECTOR, "language_model")
TRAINABLE_PARTS: dict[str, tuple[str, ...]] = {
    "stage1": (CONNECTOR,),  # alignment: only the connector learns
    "stage2": (CONNECTOR, "language_model"),  # instruction tuning
}


@dataclass(frozen=True)
class PartCount:
    trainable: int
    total: int


def configure_trainable(model: nn.Module, stage: str) -> None:
    if stage not in TRAINABLE_PARTS:
        raise ValueError(f"stage must be one of {sorted(TRAINABLE_PARTS)}, got {stage!r}")
    for part in PARTS:
        getattr(model, part).requires_grad_(part in TRAINABLE_PARTS[stage])
    if CONNECTOR in TRAINABLE_PARTS[stage]:
        for parameter in getattr(model, CONNECTOR).fixed_parameters(stage):
            parameter.requires_grad_(False)


def parameter_report(model: nn.Module) -> dict[str, PartCount]:
    """Trainable and total parameter counts per part, plus "all"."""
    report = {}
    for part in PARTS:
        params = list(getattr(model, part).parameters())
        report[part] = PartCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
    report["all"] = PartCount(sum(c.trainable for c in report.values()), sum(c.total for c in report.values()))
    return report


def format_parameter_report(report: dict[str, PartCount]) -> str:
    lines = [f"{'part':<16}{'trainable':>16}{'total':>16}"]
    lines += [f"{part:<16}{c.trainable:>16,}{c.total:>16,}" for part, c in report.items()]
    return "\n".join(lines)
