"""Where the visual tokens look: Grad-CAM for one answer (the paper's Fig. 4), and the connector's
attention focus over many images (`attention_focus`: are the m tokens different views of the image,
or copies of one).

Grad-CAM: where in the image the m visual tokens look when the model gives its answer, at each budget m.

For one (image, question, answer) and a budget m, the answer's mean log-likelihood is
back-propagated to the MQT's cross-attention weights A (heads x m queries x N grid cells). The
relevance of a cell is the gradient-weighted attention, positive part, averaged over heads
(Chefer et al.'s rule for attention maps: mean_h (dscore/dA ⊙ A)^+), summed over the m queries, or
taken for one chosen query. The N cells form the vision tower's grid over the image the model sees
(padded to a square as LLaVA does), so the map lies on that image exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from mqt_llava.config import Spec
from mqt_llava.data.images import preprocess_image
from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.model.connectors.mqt import grid_side
from mqt_llava.model.constants import IGNORE_INDEX


@dataclass(frozen=True)
class Focus:
    """How the m visual tokens share the image between them, averaged over a set of images.

    A connector that has collapsed (every query looking at the same patches, so the m tokens are
    near copies of one another) makes m = 1 carry what m = M does: a budget curve from such a model
    measures nothing about budgets, whatever its accuracy."""

    budget: int
    images: int
    entropy: float  # attention entropy per query and head, as a share of the uniform's log N (1: looks everywhere)
    distinct: float  # distinct most-attended patches (vision grid positions) among the m queries, per image and head
    similarity: float  # mean cosine similarity of two different visual tokens of one image (1: copies)

    COLLAPSED = 0.95  # similarity at or above this: the tokens are near copies

    @property
    def collapsed(self) -> bool:
        return self.budget > 1 and self.similarity >= self.COLLAPSED

    def summary(self) -> str:
        line = (
            f"visual tokens at m = {self.budget} over {self.images} images: mean cosine similarity "
            f"{self.similarity:.3f} between two tokens of one image, {self.distinct:.1f} distinct "
            f"most-attended patches of {self.budget} queries per head, attention entropy "
            f"{self.entropy:.2f} of uniform"
        )
        if self.collapsed:
            line += " -- COLLAPSED: the tokens are near copies, so fewer tokens lose little by construction"
        return line

    def to_dict(self) -> dict:
        return {
            "budget": self.budget,
            "images": self.images,
            "entropy": self.entropy,
            "distinct": self.distinct,
            "similarity": self.similarity,
            "collapsed": self.collapsed,
        }


def attends_to_grid(connector) -> bool:
    """Whether the connector attends to the grid and can record its attention (the MQT does)."""
    return hasattr(connector, "record_attention")


@torch.inference_mode()
def attention_focus(
    engine: InferenceEngine, images: list[Image.Image], budgets: list[int], batch_size: int = 32
) -> dict[int, Focus]:
    """Where the m queries look and how alike their tokens come out, over `images`, at each budget
    (explain.Focus); the images are preprocessed and the vision tower run once for all budgets."""
    model = engine.model
    connector = model.connector
    if not attends_to_grid(connector):
        raise ValueError(
            f"attention focus needs a connector that attends to the grid (mqt); this model's is "
            f"{type(connector).__name__}"
        )
    if not images:
        raise ValueError("attention focus needs at least one image")
    ms = [model.resolve_num_visual_tokens(b) for b in budgets]
    sums = {m: [0.0, 0.0, 0.0] for m in ms}  # entropy, distinct, similarity, summed over images
    connector.record_attention = True
    try:
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            pixels = np.stack([preprocess_image(image, engine.image_settings, engine.aspect) for image in chunk])
            grid = model.grid_features(torch.from_numpy(pixels).to(model.device))
            for m in ms:
                tokens = connector(grid, m).float()
                weights = connector.recorded_attention.float()  # (images, heads, m, N)
                log_n = float(np.log(weights.shape[-1]))
                entropy = float(-(weights * weights.clamp_min(1e-12).log()).sum(-1).mean(dim=(1, 2)).sum()) / log_n
                top = weights.argmax(-1)  # (images, heads, m)
                distinct = sum(len(set(row.tolist())) for row in top.flatten(0, 1)) / weights.shape[1]
                similarity = float(len(chunk))
                if m > 1:
                    unit = torch.nn.functional.normalize(tokens, dim=-1)
                    pairs = unit @ unit.transpose(1, 2)  # (images, m, m), off-diagonal: two different tokens
                    similarity = float((pairs.sum(dim=(1, 2)) - m).sum()) / (m * (m - 1))
                for k, value in enumerate((entropy, distinct, similarity)):
                    sums[m][k] += value
    finally:
        connector.record_attention, connector.recorded_attention = False, None
    n = len(images)
    return {m: Focus(m, n, *(total / n for total in sums[m])) for m in ms}


class ExplainSpec(Spec):
    """jobs/explain.py's spec (packaged as tiny/explain.yaml: the quickstart's model and one of its
    held-out scenes): one image and question, explained at each budget."""

    model: str = Field(description="an export directory (jobs/stage2.py writes <run>/export)")
    image: str = Field(description="the image file")
    question: str = Field(description="the question, as the model is asked it")
    budgets: str | int | list[int | str] | None = Field(
        None, description="e.g. 2,8,M (M: the model's maximum); default 8,16,64,M, those the model has"
    )
    token: int | None = Field(None, ge=0, description="explain one visual token (0-based; below every budget)")
    answer: str | None = Field(None, description="the answer to explain (default: the model's own at each budget)")
    out: str | None = Field(None, description="the PNG (default runs/explain/<image stem>.png)")
    use_gpu: bool = Field(False, description="this machine's GPU in bf16 (default: CPU, fp32)")


@dataclass
class Explanation:
    budget: int
    answer: str
    heat: np.ndarray  # (side, side), relevance of each grid cell, max 1 (all 0 if nothing is relevant)
    token: int | None  # the query explained (0-based), None: all m


def model_view(engine: InferenceEngine, image: Image.Image) -> Image.Image:
    """The image as the vision tower sees it (padded, resized, cropped)."""
    return Image.fromarray(preprocess_image(image, engine.image_settings, engine.aspect).transpose(1, 2, 0))


def explain(
    engine: InferenceEngine,
    image: Image.Image,
    question: str,
    budget: int,
    answer: str | None = None,
    token: int | None = None,
    max_new_tokens: int = 32,
) -> Explanation:
    """The heat map at `budget` for `answer` (default: the model's own greedy answer at that budget)."""
    model, tokenizer = engine.model, engine.tokenizer
    connector = model.connector
    if not attends_to_grid(connector):
        raise ValueError(
            f"Grad-CAM needs a connector that attends to the grid (mqt); this model's is {type(connector).__name__}"
        )
    m = model.resolve_num_visual_tokens(budget)
    if token is not None and not 0 <= token < m:
        raise ValueError(f"token must be in 0..{m - 1} at m = {m}, got {token}")
    request = Request(question, image)
    if answer is None:
        answer = engine.complete([request], m, max_new_tokens=max_new_tokens)[0].text
    batch = engine.prepare([request])
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    target = torch.tensor([answer_ids], dtype=torch.long, device=batch.input_ids.device)
    input_ids = torch.cat([batch.input_ids, target], dim=1)
    labels = torch.cat([torch.full_like(batch.input_ids, IGNORE_INDEX), target], dim=1)
    connector.record_attention = True
    try:
        with torch.enable_grad():
            out = model(input_ids, torch.ones_like(input_ids), batch.pixel_values, labels=labels, num_visual_tokens=m)
            attention = connector.recorded_attention
            (-out.loss).backward(inputs=[attention])  # the score: the answer's mean log-likelihood
    finally:
        connector.record_attention, connector.recorded_attention = False, None
        model.zero_grad(set_to_none=True)
    relevance = (attention.grad * attention).clamp(min=0).mean(dim=1)[0]  # (m, N)
    relevance = relevance[token] if token is not None else relevance.sum(dim=0)
    side = grid_side(relevance.numel(), "the vision grid")
    heat = relevance.detach().reshape(side, side).float().cpu().numpy()
    peak = heat.max()
    return Explanation(m, answer, heat / peak if peak > 0 else heat, token)


def overlay_figure(view: Image.Image, explanations: list[Explanation], question: str, path) -> None:
    """The model's view, then one heat-map overlay per budget, side by side in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(256, view.width)
    shown = np.asarray(view.resize((size, size), Image.Resampling.BICUBIC))
    fig, axes = plt.subplots(1, len(explanations) + 1, figsize=(3.2 * (len(explanations) + 1), 3.8))
    axes[0].imshow(shown)
    axes[0].set_title("input (model's view)", fontsize=9)
    for ax, e in zip(axes[1:], explanations, strict=True):
        heat = Image.fromarray((e.heat * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
        ax.imshow(shown)
        ax.imshow(np.asarray(heat) / 255.0, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        which = "all tokens" if e.token is None else f"token {e.token}"
        ax.set_title(f"m = {e.budget} ({which})\n{e.answer[:40]!r}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(question, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    fig.savefig(path, dpi=110)
    plt.close(fig)
