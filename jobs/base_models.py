"""Make a preset's pretrained parts from the synthetic corpus: a tokenizer, a CLIP model trained
contrastively on image-caption pairs (its vision tower is what MQT-LLaVA uses, frozen) and a causal
LM trained on the corpus text, each saved with save_pretrained.

    python jobs/base_models.py                                   # tiny/base_models: where the tiny preset looks
    python jobs/base_models.py --set clip.steps=100 --set model.connector.num_queries=64 --set out=/tmp/base

Stage 1 and 2 then load them with from_pretrained exactly as the llava-7b preset loads hub names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mqt_llava.config import ConfigError, load_config, model_config_path, split_overrides
from mqt_llava.model.spec import ModelSpec
from mqt_llava.output import configure_output
from mqt_llava.toy.base_models import make_base_models, preset_overrides
from mqt_llava.toy.spec import BaseModelsSpec


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny/base_models", help="a BaseModelsSpec (YAML file or packaged)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. clip.steps=100 (model.<field>: the model preset)",
    )
    parser.add_argument("--verbose", action="store_true", help="keep the libraries' own logs")
    args = parser.parse_args()
    configure_output(args.verbose)
    model_overrides, overrides = split_overrides(args.overrides, "model")
    try:
        spec = load_config(BaseModelsSpec, args.config, overrides)
        model = load_config(ModelSpec, model_config_path(spec.model), model_overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    out = Path(spec.out)
    report = make_base_models(spec, model, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"base models in {out}; report in {out / 'report.json'}")
    print("use them with: " + " ".join(f"--set model.{o}" for o in preset_overrides(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
