"""Grad-CAM of visual tokens (the paper's Fig. 4): for each budget, where the m visual tokens look
when the model answers, as heat maps over the image, side by side in one PNG.

    python jobs/explain.py --model runs/quickstart/train/tiny-stage2/export --image scene.png \\
        --question "How many circles are there?" --budgets 2,8,16,M
    python jobs/explain.py ... --token 0          # one visual token (0-based) instead of all m
    python jobs/explain.py ... --answer "Three"   # explain this answer instead of the model's own
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mqt_llava.data.images import ImageError, decode_image
from mqt_llava.model.budgets import default_budgets, parse_budgets
from mqt_llava.model.export import check_export, visual_token_range


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="an export directory (jobs/stage2.py writes <run>/export)")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--budgets", help="comma-separated; M = the model's maximum (default 8,16,64,M, those below M)")
    parser.add_argument("--token", type=int, help="explain one visual token (0-based; must be < every budget)")
    parser.add_argument("--answer", help="the answer to explain (default: the model's own at each budget)")
    parser.add_argument("--out", type=Path, help="the PNG (default runs/explain/<image stem>.png)")
    parser.add_argument("--gpu", action="store_true", help="run on this machine's GPU in bf16 (default: CPU, fp32)")
    args = parser.parse_args(argv)
    try:
        low, maximum = visual_token_range(check_export(args.model, "--model"))
        budgets = (
            parse_budgets(args.budgets, maximum, "--budgets", low)
            if args.budgets
            else default_budgets(maximum, (8, 16, 64), low)
        )
        if args.token is not None and not 0 <= args.token < min(budgets):
            raise ValueError(f"--token {args.token}: must be in 0..{min(budgets) - 1} (below the smallest budget)")
        image = decode_image(args.image.read_bytes())
    except (ValueError, OSError) as exc:  # ImageError is a ValueError
        kind = "image" if isinstance(exc, ImageError | OSError) else "argument"
        print(f"{kind} error: {exc}", file=sys.stderr)
        return 2
    from mqt_llava.devices import Placement
    from mqt_llava.explain import explain, model_view, overlay_figure
    from mqt_llava.inference import load_placed_engine

    engine = load_placed_engine(args.model, Placement(args.gpu))
    explanations = []
    for m in budgets:
        e = explain(engine, image, args.question, m, answer=args.answer, token=args.token)
        peak = divmod(int(e.heat.argmax()), e.heat.shape[1])
        side = e.heat.shape[0]
        print(f"m = {m:>4}: answer {e.answer!r}; hottest cell (row, col) {peak} of the {side}x{side} grid")
        explanations.append(e)
    out = args.out or Path("runs/explain") / f"{args.image.stem}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay_figure(model_view(engine, image), explanations, args.question, out)
    print(f"heat maps: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
