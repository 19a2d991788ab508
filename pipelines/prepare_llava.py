"""Convert LLaVA JSON + image folders into Parquet shards (image bytes embedded) with a rejects report.

    python pipelines/prepare_llava.py --json data/blip_laion_cc_sbu_558k.json \\
        --image-root data/LLaVA-Pretrain/images --template plain --output shards/558k
    python pipelines/prepare_llava.py --json data/llava_v1_5_mix665k.json \\
        --image-root data --template vicuna_v1 --output s3://bucket/shards/665k

Records are checked with the model's tokenizer and context length (`--model`, a preset name or a
model YAML; `--set model.<field>=value` overrides its fields), so a record
that would not fit is rejected here with its reason, not during training. Exit status 0 means the
run completed (rejected records included); rerunning skips completed shards.
"""

from __future__ import annotations

import argparse
import sys

from mqt_llava.config import load_config, model_config_path, split_overrides
from mqt_llava.data.conversation import TEMPLATES
from mqt_llava.data.images import DEFAULT_MAX_PIXELS
from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.model.builder import load_tokenizer, max_visual_tokens
from mqt_llava.model.spec import ModelSpec
from mqt_llava.output import configure_output
from mqt_llava.ray_runtime import init_ray


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True, help="LLaVA JSON array (local path or pyarrow URI)")
    parser.add_argument("--image-root", help="folder the records' `image` paths are relative to")
    parser.add_argument("--output", required=True, help="shard directory (local path or pyarrow URI)")
    parser.add_argument("--template", required=True, choices=sorted(TEMPLATES), help="plain: 558K, vicuna_v1: 665K")
    parser.add_argument("--model", default="tiny", help="the model (preset or YAML) whose tokenizer and context apply")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="model.KEY=VALUE",
        help="override a field of the model, e.g. --set model.tokenizer.pretrained=./tok",
    )
    parser.add_argument("--verbose", action="store_true", help="keep Ray's and the libraries' own logs")
    parser.add_argument("--shard-mb", type=float, default=256.0, help="target shard size")
    parser.add_argument("--max-records-per-shard", type=int, default=50_000)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="larger images are rejected")
    parser.add_argument("--max-in-flight", type=int, default=4, help="shards converted at once (bounds memory)")
    args = parser.parse_args()

    configure_output(args.verbose)
    model_overrides, rest = split_overrides(args.overrides, "model")
    if rest:
        parser.error(f"--set {rest[0]}: this job's fields are the model's: --set model.<field>=value")
    spec = load_config(ModelSpec, model_config_path(args.model), model_overrides)
    try:  # before any work: every shard task would fail on a tokenizer that is not there
        load_tokenizer(spec.tokenizer)
    except FileNotFoundError as exc:
        parser.error(f"tokenizer: {exc}")
    job = PrepareJob(
        json_path=args.json,
        image_root=args.image_root,
        output=args.output,
        tokenizer=spec.tokenizer,
        rules=RecordRules(args.template, spec.max_length, max_visual_tokens(spec), args.max_pixels),
        shard_mb=args.shard_mb,
        max_records_per_shard=args.max_records_per_shard,
        max_in_flight=args.max_in_flight,
    )
    init_ray()
    report = prepare(job).as_dict()
    print(
        f"read {report['read']}, written {report['written']}, rejected {report['rejected']} "
        f"(shards converted {report['shards_converted']}, skipped {report['shards_skipped']})"
    )
    for reason, count in report["rejected_by_reason"].items():
        print(f"  rejected {reason}: {count}")
    print(f"shards, rejects.jsonl and summary.json in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
