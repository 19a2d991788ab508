"""Per-GPU memory of a training stage before launch, and whether it fits (mqt_llava.train.memory).

    python jobs/memory_plan.py --config llava-7b/stage2 --gpu-memory 40
    python jobs/memory_plan.py --config llava-7b/stage1 --gpu-memory 48 --set micro_batch_size=16

Exits 1 when the stage does not fit, naming what to change.
"""

from __future__ import annotations

import argparse
import sys

from mqt_llava.config import ConfigError, load_config, model_config_path, split_overrides
from mqt_llava.model.spec import ModelSpec
from mqt_llava.train.memory import plan_memory
from mqt_llava.train.spec import StageSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a StageSpec: a YAML file or e.g. llava-7b/stage2")
    parser.add_argument("--gpu-memory", type=float, help="GiB per GPU (default: the config's resources.gpu_memory_gib)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a field of the stage (num_workers=16) or, as model.<field>, of its model",
    )
    args = parser.parse_args(argv)
    try:
        model_overrides, overrides = split_overrides(args.overrides, "model")
        stage = load_config(StageSpec, args.config, overrides)
        model = load_config(ModelSpec, model_config_path(stage.model), model_overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    gib = args.gpu_memory or stage.resources.gpu_memory_gib
    if gib is None:
        parser.error("--gpu-memory: the config sets no resources.gpu_memory_gib")
    plan = plan_memory(stage, model, gib)
    print(plan.table())
    print(plan.verdict())
    return 0 if plan.fits else 1


if __name__ == "__main__":
    raise SystemExit(main())
