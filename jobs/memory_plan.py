"""Per-GPU memory of a training stage before launch, and whether it fits (mqt_llava.train.memory).

    python jobs/memory_plan.py                                     # llava-7b/stage2 on its 40-GiB GPUs
    python jobs/memory_plan.py --config llava-7b/stage1 --set resources.gpu_memory_gib=48 \\
        --set micro_batch_size=16

The spec is the stage's own (a StageSpec, the one jobs/stage1.py and jobs/stage2.py run): the GPU's
memory is its resources.gpu_memory_gib, and `--set model.<field>=value` reaches its model. Exits 1
when the stage does not fit, naming what to change.
"""

from __future__ import annotations

import sys

from mqt_llava.command import spec_parser
from mqt_llava.config import ConfigError, load_config, model_config_path, split_overrides
from mqt_llava.model.spec import ModelSpec
from mqt_llava.train.memory import plan_memory
from mqt_llava.train.spec import StageSpec


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser(StageSpec, __doc__, "llava-7b/stage2", "micro_batch_size=16 (model.<field>: the model's)")
    args = parser.parse_args(argv)
    model_overrides, overrides = split_overrides(args.overrides, "model")
    try:
        stage = load_config(StageSpec, args.config, overrides)
        model = load_config(ModelSpec, model_config_path(stage.model), model_overrides)
        if stage.resources.gpu_memory_gib is None:
            raise ConfigError("resources.gpu_memory_gib: the config sets none (each GPU's memory, GiB): --set it")
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    plan = plan_memory(stage, model, stage.resources.gpu_memory_gib)
    print(plan.table())
    print(plan.verdict())
    return 0 if plan.fits else 1


if __name__ == "__main__":
    raise SystemExit(main())
