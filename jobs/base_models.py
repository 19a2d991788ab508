"""Make a preset's pretrained parts from the synthetic corpus: a tokenizer, a CLIP model trained
contrastively on image-caption pairs (its vision tower is what MQT-LLaVA uses, frozen) and a causal
LM trained on the corpus text, each saved with save_pretrained, with a manifest (manifest.json:
the fingerprint of the config and code that made them, the gates, every file's hash, the commit
and machine; mqt_llava.toy.shipped).

    python jobs/base_models.py --rebuild     # tiny/base_models: rebuilds the parts the package ships
                                             # (platform/mqt_llava/pretrained/tiny), ~9 min on 2 cores
    python jobs/base_models.py --set clip.steps=100 --set model.connector.num_queries=64 --set out=/tmp/base

A rerun with the same config and code keeps what is there; one interrupted resumes (each part
made is kept); one with another config or code replaces the parts in a directory of your own, and
is refused in the package's own place (however `out` names it) unless --rebuild: an experiment does not overwrite
the parts every user of this checkout loads. Stage 1 and 2 then load them
with from_pretrained exactly as the llava-7b preset loads hub names (the tiny preset's `pretrained`
fields name the shipped ones as package://mqt_llava/pretrained/tiny/...).
"""

from __future__ import annotations

import argparse
import sys

from mqt_llava.config import ConfigError, load_config, model_config_path, split_overrides
from mqt_llava.model.spec import ModelSpec
from mqt_llava.output import configure_output
from mqt_llava.toy.base_models import preset_overrides
from mqt_llava.toy.shipped import resolve_out, ship_base_models, ships_parts
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
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="build again even when the parts there are current; needed to replace the package's own parts",
    )
    parser.add_argument("--verbose", action="store_true", help="keep the libraries' own logs")
    args = parser.parse_args()
    model_overrides, overrides = split_overrides(args.overrides, "model")
    try:
        spec = load_config(BaseModelsSpec, args.config, overrides)
        model = load_config(ModelSpec, model_config_path(spec.model), model_overrides)
        out = resolve_out(spec.out)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    configure_output(args.verbose)  # after the checks: a refused command changes nothing in its process
    try:
        manifest = ship_base_models(spec, model, out, rebuild=args.rebuild, replace_other=not ships_parts(out))
    except ConfigError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    size = sum(f["bytes"] for f in manifest["files"].values()) / 2**20
    print(f"base models in {out} ({size:.1f} MB); manifest {out / 'manifest.json'}")
    for name, gate in manifest["gates"].items():
        print(f"  gate {name}: {'passed' if gate['passed'] else 'FAILED'} (>= {gate['gate']:.0%} on every figure)")
    print("use them with: " + " ".join(f"--set model.{o}" for o in preset_overrides(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
