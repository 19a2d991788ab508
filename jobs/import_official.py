"""Import the official MQT-LLaVA checkpoint (LLaVA's format, e.g. gordonhu608/MQT-LLaVA-7b downloaded
to a directory) as this platform's export, with the official behaviour (position-only keys, the
checkpoint's trained position table as it is).

    huggingface-cli download gordonhu608/MQT-LLaVA-7b --local-dir /models/MQT-LLaVA-7b
    python jobs/import_official.py --set checkpoint=/models/MQT-LLaVA-7b --set out=/models/mqt-llava-7b-export
    python jobs/evaluate.py --config llava-7b/evaluate --set model=/models/mqt-llava-7b-export

The spec is an OfficialImportSpec (mqt_llava.model.official): checkpoint and out are required;
vision_tower (a local copy of the CLIP tower) and num_heads are optional.
"""

from __future__ import annotations

import sys

from mqt_llava.command import spec_parser
from mqt_llava.config import ConfigError, load_config
from mqt_llava.model.official import NotAnOfficialCheckpoint, OfficialImportSpec, import_official


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser(OfficialImportSpec, __doc__, None, "vision_tower=/models/clip-vit-large-patch14-336")
    args = parser.parse_args(argv)
    try:
        spec = load_config(OfficialImportSpec, args.config, args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        out = import_official(spec.checkpoint, spec.out, spec.vision_tower, spec.num_heads)
    except NotAnOfficialCheckpoint as exc:
        print(f"checkpoint error: {exc}", file=sys.stderr)
        return 2
    print(f"export: {out}")
    print(f"evaluate it: python jobs/evaluate.py --config llava-7b/evaluate --set model={out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
