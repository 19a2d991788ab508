"""The Matryoshka Query Transformer (MQT): M latent queries compress a grid of vision features into
m <= M visual tokens, nested by construction.

One cross-attention layer, queries -> grid features. Queries never attend to each other and every
other operation (LayerNorm, projections) is per token, so running the first m queries yields exactly
the first m rows of what running all M would: the Matryoshka property needs no extra machinery, only
that nothing mixes information across queries.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from transformers import initialization as init

from mqt_llava.model.budgets import check_budget
from mqt_llava.model.connectors import Connector, ConnectorOptions, register_connector

Order = Literal["attention_then_projection", "projection_then_attention"]
Keys = Literal["content_and_position", "normalised_content_and_position", "position_only"]
PositionTable = Literal["fixed", "trained_in_stage1", "trained"]
ORDERS: tuple[str, ...] = get_args(Order)
KEY_MODES: tuple[str, ...] = get_args(Keys)
POSITION_TABLES: tuple[str, ...] = get_args(PositionTable)


class MQTOptions(ConnectorOptions):
    """The MQT's options, declared once: the model YAML's `connector:` section, the export's config
    and the ablation axes all read them from here."""

    kind: Literal["mqt"] = "mqt"
    num_queries: int = Field(256, ge=1, description="M, the largest visual-token budget")
    num_heads: int = Field(8, ge=1)
    order: Order = Field("attention_then_projection", description="attend then project (the paper's), or the reverse")
    keys: Keys = Field(
        "content_and_position",
        description="content_and_position: LN(features + position); normalised_content_and_position: "
        "LN(features) + position, each term at unit scale; position_only: the official code's keys",
    )
    position_table: PositionTable = Field(
        "fixed",
        description="fixed: the 2D sin-cos table, never trained; trained_in_stage1: a parameter stage 1 trains "
        "and stage 2 keeps (the official code); trained: trained in every stage that trains the connector",
    )

    def max_tokens(self, grid_positions: int) -> int:
        return self.num_queries


def sincos_2d(side: int, dim: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embeddings of a side x side grid, shape (side * side, dim).

    Half of the channels encode the row, half the column (MAE / Qwen-VL convention), row-major
    order so that entry r * side + c is cell (r, c).
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos embeddings need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(side, dtype=torch.float64)
    angles = coords[:, None] * omega[None, :]  # (side, quarter)
    axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (side, dim/2)
    rows = axis[:, None, :].expand(side, side, -1)
    cols = axis[None, :, :].expand(side, side, -1)
    return torch.cat([rows, cols], dim=-1).reshape(side * side, dim).float()


def grid_side(num_positions: int, what: str) -> int:
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise ValueError(f"{what} must form a square grid, got {num_positions} positions")
    return side


@register_connector
class MatryoshkaQueryTransformer(Connector):
    """Cross-attention from M latent queries to grid features, then (or after) a projection to the
    LLM width.

    `order="attention_then_projection"` (the paper's choice) attends at the vision width and projects
    the m outputs; `"projection_then_attention"` projects the grid features to the LLM width first and
    attends there. `keys="content_and_position"` builds keys as LN(features + position), where
    features that vary more across the grid than the position table (the toy CLIP's: 1.80 against
    0.17 a channel) drown the position, so every query can pick the same salient patch;
    `"normalised_content_and_position"` adds the table after normalising the features (LN(features)
    + position, as Qwen-VL's resampler does), so both terms keep unit scale; `"position_only"`
    reproduces the official code, whose keys are LN(position) only (attention weights then do not
    depend on the image; only the values do).

    The position table (`pos_embed`, the official code's name) is a parameter initialised to the 2D
    sin-cos table, saved with the other weights. `position_table` says which stages train it:
    `"fixed"` never, `"trained_in_stage1"` stage 1 only (the official code: its stage 1 trains the
    whole abstractor, table included, and its stage 2 builds the table frozen and loads stage 1's),
    `"trained"` every stage that trains the connector.
    """

    def __init__(
        self,
        num_queries: int,
        vision_width: int,
        llm_width: int,
        num_heads: int = 8,
        order: Order = "attention_then_projection",
        keys: Keys = "content_and_position",
        position_table: PositionTable = "fixed",
    ) -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"num_queries must be >= 1, got {num_queries}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if keys not in KEY_MODES:
            raise ValueError(f"keys must be one of {KEY_MODES}, got {keys!r}")
        if position_table not in POSITION_TABLES:
            raise ValueError(f"position_table must be one of {POSITION_TABLES}, got {position_table!r}")
        width = vision_width if order == "attention_then_projection" else llm_width
        if width % num_heads:
            raise ValueError(f"attention width {width} is not divisible by num_heads={num_heads}")
        self.num_queries = num_queries
        self.order = order
        self.keys = keys
        self.position_table = position_table
        self.num_heads = num_heads
        self.width = width

        # Queries sit on a ceil(sqrt(M))^2 grid; the same table, resized, positions the keys, so a
        # query and the image region at the same relative place share a positional frame.
        self.query_side = math.isqrt(num_queries - 1) + 1
        self.pos_embed = nn.Parameter(sincos_2d(self.query_side, width), requires_grad=position_table != "fixed")
        self.queries = nn.Parameter(torch.empty(num_queries, width))

        self.input_proj = nn.Linear(vision_width, llm_width) if order == "projection_then_attention" else None
        # Pre-attention LayerNorms and the bias-free output projection follow the official code
        # (eps 1e-6; no LayerNorm after attention).
        self.ln_q = nn.LayerNorm(width, eps=1e-6)
        self.ln_k = nn.LayerNorm(width, eps=1e-6)
        self.ln_v = nn.LayerNorm(width, eps=1e-6)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.output_proj = (
            nn.Linear(vision_width, llm_width, bias=False) if order == "attention_then_projection" else None
        )
        self.record_attention = False  # explain.py turns this on to keep the attention weights
        self.recorded_attention: torch.Tensor | None = None
        self.reset_parameters()

    options_class = MQTOptions

    @classmethod
    def from_options(
        cls, options: MQTOptions, vision_width: int, llm_width: int, grid_positions: int
    ) -> MatryoshkaQueryTransformer:
        return cls(
            options.num_queries,
            vision_width,
            llm_width,
            options.num_heads,
            options.order,
            options.keys,
            options.position_table,
        )

    @property
    def max_tokens(self) -> int:
        return self.num_queries

    def fixed_parameters(self, stage: str) -> list[nn.Parameter]:
        if self.position_table == "fixed" or (self.position_table == "trained_in_stage1" and stage != "stage1"):
            return [self.pos_embed]
        return []

    def init_weights(self) -> None:
        # transformers' guarded init functions: inside from_pretrained they leave loaded tensors
        # alone, so a loaded (possibly trained) table is kept and one missing from the export (written
        # before the table was saved) gets the sin-cos table, the one those exports computed with.
        self.reset_parameters()
        init.copy_(self.pos_embed, sincos_2d(self.query_side, self.width))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, *args) -> None:
        # A fixed table may be missing from a state dict: exports written while it was an unsaved
        # buffer hold none (init_from reads a stage-1 export's connector this way), and the module
        # already holds the sin-cos table they computed with, so it is kept and not reported missing.
        # A trained table is weights like any other: a strict load without it fails, as it must (the
        # sin-cos table in its place would silently be another model). A non-strict load (a checkpoint
        # holding only a stage's trained weights) keeps the table the module holds.
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, *args)
        if self.position_table == "fixed" and prefix + "pos_embed" in missing_keys:
            missing_keys.remove(prefix + "pos_embed")

    def reset_parameters(self) -> None:
        """The official code's initialisation: queries and other linear layers truncated normal with
        std 0.02; the query, key and value projections as torch's MultiheadAttention makes its
        stacked input projection (Xavier-uniform over the (3 x width, width) matrix, so attention
        logits start at about unit scale and every query starts with a pattern of its own); the output
        projection normal with std llm_width ** -0.5."""
        nn.init.trunc_normal_(self.queries, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        bound = math.sqrt(6 / (self.width + 3 * self.width))
        for linear in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.uniform_(linear.weight, -bound, bound)
        if self.output_proj is not None:
            nn.init.normal_(self.output_proj.weight, std=self.output_proj.out_features**-0.5)

    def check_num_tokens(self, num_tokens: int) -> int:
        return check_budget(num_tokens, self.num_queries, "num_tokens")

    def key_positions(self, num_positions: int) -> torch.Tensor:
        """The query grid's position table resized (bicubic) to the feature grid, (N, width). The
        resize runs in fp32 whatever the table's dtype, as the official code does it."""
        side = grid_side(num_positions, "grid features")
        table = self.pos_embed
        if side == self.query_side:
            return table
        square = table.float().reshape(1, self.query_side, self.query_side, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(square, size=(side, side), mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1).reshape(num_positions, -1).to(table.dtype)

    def forward(self, grid_features: torch.Tensor, num_tokens: int | None = None) -> torch.Tensor:
        """(batch, N, vision_width) grid features -> (batch, m, llm_width) visual tokens."""
        m = self.check_num_tokens(self.num_queries if num_tokens is None else num_tokens)
        batch, num_positions, _ = grid_features.shape
        x = self.input_proj(grid_features) if self.input_proj is not None else grid_features
        pos = self.key_positions(num_positions).to(x.dtype)

        q = self.ln_q(self.queries[:m] + self.pos_embed[:m].to(x.dtype))
        if self.keys == "position_only":
            k = self.ln_k(pos.expand(batch, -1, -1))
        elif self.keys == "normalised_content_and_position":
            k = self.ln_k(x) + pos
        else:
            k = self.ln_k(x + pos)
        v = self.ln_v(x)

        heads, head_dim = self.num_heads, self.width // self.num_heads
        q = self.q_proj(q).reshape(1, m, heads, head_dim).transpose(1, 2).expand(batch, -1, -1, -1)
        k = self.k_proj(k).reshape(batch, num_positions, heads, head_dim).transpose(1, 2)
        v = self.v_proj(v).reshape(batch, num_positions, heads, head_dim).transpose(1, 2)
        if self.record_attention:
            # SDPA's arithmetic written out, so the weights (and their gradient) can be kept for
            # Grad-CAM (mqt_llava.explain): (batch, heads, m, N).
            weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(head_dim), dim=-1)
            if weights.requires_grad:
                weights.retain_grad()
            self.recorded_attention = weights
            attended = weights @ v
        else:
            attended = F.scaled_dot_product_attention(q, k, v)  # no mask: every query sees every cell
        out = self.out_proj(attended.transpose(1, 2).reshape(batch, m, self.width))
        return self.output_proj(out) if self.output_proj is not None else out
