"""FLOPs of one forward pass (the paper's Fig. 1): vision tower + connector + LLM prefill of the
visual and text tokens, counted by `torch.utils.flop_counter` on the meta device (no weights, no
download), for the model's own connector at any budget and for LLaVA-1.5's 576-token two-layer MLP connector (the
registered `mlp` kind, mqt_llava.model.connectors.mlp).

    python -m mqt_llava.eval.flops --model llava-7b --text-tokens 64 --budgets 2,16,64,144,M

The LLM prefill computes the logits of the last position only (what generation's prefill needs).
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import DynamicCache

from mqt_llava.config import load_config, model_config_path, split_overrides
from mqt_llava.model.budgets import parse_budgets
from mqt_llava.model.builder import build_model
from mqt_llava.model.connectors import build_connector
from mqt_llava.model.spec import ModelSpec, connector_token_range


@dataclass(frozen=True)
class ForwardFlops:
    label: str
    visual_tokens: int
    vision: float
    connector: float
    llm: float

    @property
    def total(self) -> float:
        return self.vision + self.connector + self.llm


def count(fn) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


class FlopsModel:
    """One preset built on the meta device; counts a single-image forward at any budget."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.model = build_model(spec, device="meta").model.eval()
        vision = self.model.config.vision_config
        self.image_size = vision.image_size
        self.grid_tokens = (vision.image_size // vision.patch_size) ** 2
        self.vision_width = vision.hidden_size
        self.llm_width = self.model.config.text_config.hidden_size

    @functools.cached_property
    def vision(self) -> tuple[float, torch.Tensor]:
        """The tower's FLOPs and its (meta) grid features: the same at every budget, counted once."""
        pixels = torch.empty(1, 3, self.image_size, self.image_size, device="meta")
        result = {}

        def run():
            result["grid"] = self.model.grid_features(pixels)

        return count(run), result["grid"]

    def llm_flops(self, sequence: int) -> float:
        embeds = torch.empty(1, sequence, self.llm_width, device="meta")
        # A fresh cache, as generation's prefill has, and no padding mask: transformers then builds the
        # causal mask without reading tensor values (which meta tensors do not have).
        cache = DynamicCache(config=self.model.language_model.config)
        return count(lambda: self.model.language_model(inputs_embeds=embeds, past_key_values=cache, logits_to_keep=1))

    def at_budget(self, m: int, text_tokens: int) -> ForwardFlops:
        """The model's own connector at m tokens."""
        vision, grid = self.vision
        connector = count(lambda: self.model.connector(grid, m))
        kind = self.model.config.connector["kind"].upper()
        return ForwardFlops(f"{kind} m={m}", m, vision, connector, self.llm_flops(m + text_tokens))

    def llava_mlp(self, text_tokens: int) -> ForwardFlops:
        vision, grid = self.vision
        n = grid.shape[1]
        with torch.device("meta"):
            projector = build_connector({"kind": "mlp", "depth": 2}, self.vision_width, self.llm_width, n)
        connector = count(lambda: projector(grid))
        return ForwardFlops(f"LLaVA-1.5 MLP ({n} tokens)", n, vision, connector, self.llm_flops(n + text_tokens))


PAPER_SPEEDUPS = {256: 2.0, 144: 3.0, 16: 8.0}  # read off the paper's Fig. 1 / text


def flops_table(model: str, budgets: list[int], text_tokens: int, overrides: list[str] | None = None):
    """`model`: a preset name or a model YAML; `overrides`: fields of it."""
    spec = load_config(ModelSpec, model_config_path(model), overrides or [])
    counter = FlopsModel(spec)
    baseline = counter.llava_mlp(text_tokens)
    return baseline, [counter.at_budget(m, text_tokens) for m in budgets]


def format_table(baseline: ForwardFlops, rows: list[ForwardFlops], text_tokens: int) -> str:
    lines = [
        f"one forward, 1 image + {text_tokens} text tokens (TFLOPs; 1 multiply-add = 2 FLOPs)",
        "| model | visual tokens | vision tower | connector | LLM prefill | total | speed-up | paper |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [baseline, *rows]:
        speedup = baseline.total / r.total
        paper = PAPER_SPEEDUPS.get(r.visual_tokens) if r is not baseline else None
        lines.append(
            f"| {r.label} | {r.visual_tokens} | {r.vision / 1e12:.3f} | {r.connector / 1e12:.4f} | "
            f"{r.llm / 1e12:.3f} | {r.total / 1e12:.3f} | {speedup:.2f}x | {f'{paper:.0f}x' if paper else ''} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="FLOPs of one forward at several visual-token budgets.")
    parser.add_argument("--model", default="llava-7b", help="a preset name or a model YAML")
    parser.add_argument("--budgets", default="2,16,36,64,144,M", help="M: the model's maximum")
    parser.add_argument("--text-tokens", type=int, default=64, help="prompt tokens besides the visual ones")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="model.KEY=VALUE",
        help="a field of the model, e.g. --set model.connector.num_queries=64",
    )
    args = parser.parse_args(argv)
    overrides, rest = split_overrides(args.overrides, "model")
    if rest:
        parser.error(f"--set {rest[0]}: this command's fields are the model's: --set model.<field>=value")
    low, high = connector_token_range(load_config(ModelSpec, model_config_path(args.model), overrides))
    budgets = parse_budgets(args.budgets, high, "--budgets", low)
    baseline, rows = flops_table(args.model, budgets, args.text_tokens, overrides)
    print(format_table(baseline, rows, args.text_tokens))


if __name__ == "__main__":
    main()
