"""Grad-CAM of visual tokens (the paper's Fig. 4): for each budget, where the m visual tokens look
when the model answers, as heat maps over the image, side by side in one PNG.

    python jobs/explain.py                       # tiny/explain: the quickstart's model, one held-out scene
    python jobs/explain.py --set model=runs/train/tiny-stage2/export --set image=scene.png \\
        --set question="How many circles are there?" --set budgets=2,8,16,M
    python jobs/explain.py --set token=0         # one visual token (0-based) instead of all m
    python jobs/explain.py --set answer=Three    # explain this answer instead of the model's own

The spec is an ExplainSpec (mqt_llava.explain).
"""

from __future__ import annotations

import sys
from pathlib import Path

from mqt_llava.command import spec_parser
from mqt_llava.config import load_config
from mqt_llava.data.images import ImageError, decode_image
from mqt_llava.explain import ExplainSpec
from mqt_llava.model.budgets import default_budgets, parse_budgets
from mqt_llava.model.export import check_export, visual_token_range


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser(ExplainSpec, __doc__, "tiny/explain", "budgets=2,8,M")
    args = parser.parse_args(argv)
    try:
        spec = load_config(ExplainSpec, args.config, args.overrides)
        low, maximum = visual_token_range(check_export(spec.model, "model"))
        budgets = (
            parse_budgets([spec.budgets] if isinstance(spec.budgets, int) else spec.budgets, maximum, "budgets", low)
            if spec.budgets is not None
            else default_budgets(maximum, (8, 16, 64), low)
        )
        if spec.token is not None and spec.token >= min(budgets):
            raise ValueError(f"token {spec.token}: must be in 0..{min(budgets) - 1} (below the smallest budget)")
        image = decode_image(Path(spec.image).read_bytes())
    except (ValueError, OSError) as exc:  # ConfigError and ImageError are ValueErrors
        kind = "image" if isinstance(exc, ImageError | OSError) else "config"
        print(f"{kind} error: {exc}", file=sys.stderr)
        return 2
    from mqt_llava.devices import Placement
    from mqt_llava.explain import explain, model_view, overlay_figure
    from mqt_llava.inference import load_placed_engine

    engine = load_placed_engine(spec.model, Placement(spec.use_gpu))
    explanations = []
    for m in budgets:
        e = explain(engine, image, spec.question, m, answer=spec.answer, token=spec.token)
        peak = divmod(int(e.heat.argmax()), e.heat.shape[1])
        side = e.heat.shape[0]
        print(f"m = {m:>4}: answer {e.answer!r}; hottest cell (row, col) {peak} of the {side}x{side} grid")
        explanations.append(e)
    out = Path(spec.out) if spec.out else Path("runs/explain") / f"{Path(spec.image).stem}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay_figure(model_view(engine, image), explanations, spec.question, out)
    print(f"heat maps: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
