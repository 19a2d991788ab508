"""Make a preset's pretrained parts from the synthetic corpus: a tokenizer, a CLIP model trained
contrastively on image-caption pairs (its vision tower is what MQT-LLaVA uses, frozen) and a causal
LM trained on the corpus text, each saved with save_pretrained.

    python jobs/base_models.py --out ./runs/quickstart/base_models      (where the tiny preset looks)
    python jobs/quickstart.py --set tokenizer.pretrained=... (the overrides this job prints)

Stage 1 and 2 then load them with from_pretrained exactly as the llava-7b preset loads hub names.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mqt_llava.config import BaseModelsSpec, ModelSpec, load_config, preset_path
from mqt_llava.toy.base_models import make_base_models, preset_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart/base_models"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base_models.yaml field, e.g. clip.steps=100")  # fmt: skip
    parser.add_argument("--model-set", dest="model_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model.yaml field (architectures)")  # fmt: skip
    args = parser.parse_args()

    spec = load_config(BaseModelsSpec, preset_path(args.preset, "base_models"), args.overrides)
    model = load_config(ModelSpec, preset_path(args.preset, "model"), args.model_overrides)
    report = make_base_models(spec, model, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"base models in {args.out}; report in {args.out / 'report.json'}")
    print("use them with: " + " ".join(f"--set {o}" for o in preset_overrides(args.out)))


if __name__ == "__main__":
    main()
