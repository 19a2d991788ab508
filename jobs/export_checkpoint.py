"""Turn any training checkpoint (a run's `checkpoint_<step>` directory) into an export that
evaluation, serving and the next stage read.

    python jobs/export_checkpoint.py --checkpoint runs/train/tiny-stage2/checkpoint_0000010 \\
        --out runs/train/tiny-stage2/export-step10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mqt_llava.train.checkpoint_export import NotACheckpoint, export_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run's checkpoint_<step> directory")
    parser.add_argument("--out", type=Path, required=True, help="the export directory to write")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.checkpoint, args.out)
    except NotACheckpoint as exc:
        print(f"checkpoint error: {exc}", file=sys.stderr)
        return 2
    print(f"export: {out}")
    print(f"evaluate it: python jobs/evaluate.py --set model={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
