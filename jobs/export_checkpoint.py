"""Turn any training checkpoint (a run's `checkpoint_<step>` directory) into an export that
evaluation, serving and the next stage read.

    python jobs/export_checkpoint.py --set checkpoint=runs/train/tiny-stage2/checkpoint_0000010 \\
        --set out=runs/train/tiny-stage2/export-step10

The spec is a CheckpointExportSpec (mqt_llava.train.checkpoint_export): both fields are required.
"""

from __future__ import annotations

import sys

from mqt_llava.command import spec_parser
from mqt_llava.config import ConfigError, load_config
from mqt_llava.train.checkpoint_export import CheckpointExportSpec, NotACheckpoint, export_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser(CheckpointExportSpec, __doc__, None, "checkpoint=runs/train/<run>/checkpoint_0000010")
    args = parser.parse_args(argv)
    try:
        spec = load_config(CheckpointExportSpec, args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        out = export_checkpoint(spec.checkpoint, spec.out)
    except NotACheckpoint as exc:
        print(f"checkpoint error: {exc}", file=sys.stderr)
        return 2
    print(f"export: {out}")
    print(f"evaluate it: python jobs/evaluate.py --set model={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
