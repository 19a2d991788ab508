"""Connectors: the module between the vision tower's grid features and the LLM, turning
(batch, N, vision_width) features into (batch, m, llm_width) visual tokens.

A connector kind is one file: an options class (a `ConnectorOptions` with a `kind` literal and
`max_tokens(grid_positions)`, and `min_tokens` where not every budget down to 1 exists: every option
declared once, validated in the model YAML under `connector:`, stored in the export's config) and an
`nn.Module` subclass of `Connector` registered with `@register_connector`. Its module is imported
below (the one registration line), so the model, the configs, training (which trains the part named
`connector`), the FLOPs count and serving need no change for a new kind.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from mqt_llava.config import Spec


class ConnectorOptions(Spec):
    """A connector kind's options. The budgets it gives over a grid of N features are
    min_tokens(N)..max_tokens(N)."""

    kind: str

    def max_tokens(self, grid_positions: int) -> int:
        raise NotImplementedError

    def min_tokens(self, grid_positions: int) -> int:
        return 1


class Connector(nn.Module):
    options_class: ClassVar[type[ConnectorOptions]]

    @classmethod
    def from_options(
        cls, options: ConnectorOptions, vision_width: int, llm_width: int, grid_positions: int
    ) -> Connector:
        """The connector over a vision tower of `vision_width` with `grid_positions` features per image,
        for an LLM of `llm_width`."""
        raise NotImplementedError

    @property
    def max_tokens(self) -> int:
        """The largest number of visual tokens it gives (M)."""
        raise NotImplementedError

    @property
    def min_tokens(self) -> int:
        """The smallest: budgets min_tokens..max_tokens are valid (1 for a Matryoshka connector)."""
        return 1

    def forward(self, grid_features: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
        raise NotImplementedError

    def init_weights(self) -> None:
        """Fresh weights and buffers (transformers calls it for parts it did not load)."""
        raise NotImplementedError

    def fixed_parameters(self, stage: str) -> list[nn.Parameter]:
        """Its parameters that `stage` keeps fixed although the stage trains the connector (the MQT's
        position table, where its options say so); `configure_trainable` freezes them."""
        return []


CONNECTORS: dict[str, type[Connector]] = {}


def register_connector(cls: type[Connector]) -> type[Connector]:
    CONNECTORS[cls.options_class.model_fields["kind"].default] = cls
    return cls


def connector_options(value: Any) -> ConnectorOptions:
    """A connector's options from a mapping with its `kind` (default "mqt"), validated by that
    kind's options class; errors name the field (`connector.num_queries: ...`)."""
    if isinstance(value, ConnectorOptions):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"a connector is a mapping with a `kind` (one of {sorted(CONNECTORS)}), got {value!r}")
    kind = value.get("kind", "mqt")
    if kind not in CONNECTORS:
        raise ValueError(f"connector kind {kind!r} is not registered; known: {sorted(CONNECTORS)}")
    return CONNECTORS[kind].options_class.model_validate({**value, "kind": kind})


def build_connector(
    options: ConnectorOptions | dict, vision_width: int, llm_width: int, grid_positions: int
) -> Connector:
    options = connector_options(options)
    return CONNECTORS[options.kind].from_options(options, vision_width, llm_width, grid_positions)


# One line per connector kind: importing its module registers it.
from mqt_llava.model.connectors import mlp, mqt  # noqa: E402, F401
