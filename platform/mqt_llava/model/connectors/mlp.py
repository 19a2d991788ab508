"""LLaVA-1.5's connector, as a baseline: a GELU MLP applied to every grid feature, so the LLM sees
all N of them (576 for CLIP ViT-L/14-336). `depth: 2` is LLaVA-1.5's `mlp2x_gelu`: Linear(vision
width, LLM width), GELU, Linear(LLM width, LLM width); `depth: 1` is LLaVA-1's linear projection.

It gives exactly N visual tokens: its only budget is N (min_tokens = max_tokens = N), so every
budget check refuses any other m, and a training schedule draws N only (see
mqt_llava.model.schedules). Compared with the MQT on the same platform, data and metrics, it is the
paper's "LLaVA-1.5 at 576 tokens" row.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from mqt_llava.model.budgets import check_budget
from mqt_llava.model.connectors import Connector, ConnectorOptions, register_connector


class MLPOptions(ConnectorOptions):
    kind: Literal["mlp"] = "mlp"
    depth: int = Field(2, ge=1, description="linear layers, GELU between them (2: LLaVA-1.5's mlp2x_gelu)")

    def max_tokens(self, grid_positions: int) -> int:
        return grid_positions

    def min_tokens(self, grid_positions: int) -> int:
        return grid_positions


@register_connector
class MLPProjector(Connector):
    options_class = MLPOptions

    def __init__(self, vision_width: int, llm_width: int, grid_positions: int, depth: int = 2) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        layers: list[nn.Module] = [nn.Linear(vision_width, llm_width)]
        for _ in range(depth - 1):
            layers += [nn.GELU(), nn.Linear(llm_width, llm_width)]
        # `layers.0`, `layers.2`: LLaVA's `mm_projector.0` / `mm_projector.2`, index for index.
        self.layers = nn.Sequential(*layers)
        self.grid_positions = grid_positions

    @classmethod
    def from_options(cls, options: MLPOptions, vision_width: int, llm_width: int, grid_positions: int) -> MLPProjector:
        return cls(vision_width, llm_width, grid_positions, options.depth)

    @property
    def max_tokens(self) -> int:
        return self.grid_positions

    @property
    def min_tokens(self) -> int:
        return self.grid_positions

    def forward(self, grid_features: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
        if grid_features.shape[1] != self.grid_positions:
            raise ValueError(f"expected {self.grid_positions} grid features, got {grid_features.shape[1]}")
        if num_tokens is not None:
            check_budget(num_tokens, self.grid_positions, "num_tokens", minimum=self.grid_positions)
        return self.layers(grid_features)

    def init_weights(self) -> None:
        """torch's own Linear initialisation, as LLaVA trains its projector from."""
        for module in self.layers:
            if isinstance(module, nn.Linear):
                module.reset_parameters()
