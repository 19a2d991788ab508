"""Import the official MQT-LLaVA checkpoint (LLaVA's format, e.g. gordonhu608/MQT-LLaVA-7b downloaded
to a directory) as this platform's export, with the official behaviour (position-only keys, the
checkpoint's trained position table as it is).

    huggingface-cli download gordonhu608/MQT-LLaVA-7b --local-dir /models/MQT-LLaVA-7b
    python jobs/import_official.py --checkpoint /models/MQT-LLaVA-7b --out /models/mqt-llava-7b-export
    python jobs/evaluate.py --config llava-7b/evaluate --set model=/models/mqt-llava-7b-export
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mqt_llava.model.official import OFFICIAL_HEADS, NotAnOfficialCheckpoint, import_official


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the LLaVA-format checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="the export directory to write")
    parser.add_argument("--vision-tower", help="a local copy of the CLIP tower it names (default: its mm_vision_tower)")
    parser.add_argument("--num-heads", type=int, default=OFFICIAL_HEADS, help="the query transformer's heads")
    args = parser.parse_args(argv)
    try:
        out = import_official(args.checkpoint, args.out, args.vision_tower, args.num_heads)
    except NotAnOfficialCheckpoint as exc:
        print(f"checkpoint error: {exc}", file=sys.stderr)
        return 2
    print(f"export: {out}")
    print(f"evaluate it: python jobs/evaluate.py --config llava-7b/evaluate --set model={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
