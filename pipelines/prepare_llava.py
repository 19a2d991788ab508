"""Convert LLaVA JSON + image folders into Parquet shards (image bytes embedded) with a rejects report.

    python pipelines/prepare_llava.py --config llava-7b/prepare_558k --set output=s3://bucket/shards/558k
    python pipelines/prepare_llava.py --config llava-7b/prepare_665k --set output=s3://bucket/shards/665k
    python pipelines/prepare_llava.py --set json_path=my.json --set image_root=images --set template=vicuna_v1 \\
        --set output=shards/mine --set model=llava-7b

The spec is a PrepareSpec (mqt_llava.data.spec). Records are checked with the model's tokenizer and
context length (`model`, a preset name or a model YAML; `--set model.<field>=value` overrides its
fields), so a record that would not fit is rejected here with its reason, not during training. Exit
status 0 means the run completed (rejected records included); rerunning skips completed shards.
"""

from __future__ import annotations

import sys

from mqt_llava.command import spec_parser
from mqt_llava.config import ConfigError, load_config, model_config_path, split_overrides
from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.data.spec import PrepareSpec
from mqt_llava.model.spec import ModelSpec, max_visual_tokens
from mqt_llava.model.tokenizer import load_tokenizer
from mqt_llava.output import configure_output
from mqt_llava.ray_runtime import init_ray


def main(argv: list[str] | None = None) -> int:
    parser = spec_parser(PrepareSpec, __doc__, None, "output=shards/558k (model.<field>: the model's)")
    parser.add_argument("--verbose", action="store_true", help="keep Ray's and the libraries' own logs")
    args = parser.parse_args(argv)
    model_overrides, overrides = split_overrides(args.overrides, "model")
    try:
        spec = load_config(PrepareSpec, args.config, overrides)
        model = load_config(ModelSpec, model_config_path(spec.model), model_overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    configure_output(args.verbose)  # after the checks: a refused command changes nothing in its process
    try:  # before any work: every shard task would fail on a tokenizer that is not there
        load_tokenizer(model.tokenizer)
    except FileNotFoundError as exc:
        print(f"tokenizer error: {exc}", file=sys.stderr)
        return 2
    job = PrepareJob(
        json_path=spec.json_path,
        image_root=spec.image_root,
        output=spec.output,
        tokenizer=model.tokenizer,
        rules=RecordRules(spec.template, model.max_length, max_visual_tokens(model), spec.max_pixels),
        shard_mb=spec.shard_mb,
        max_records_per_shard=spec.max_records_per_shard,
        max_in_flight=spec.max_in_flight,
    )
    init_ray()
    report = prepare(job).as_dict()
    print(
        f"read {report['read']}, written {report['written']}, rejected {report['rejected']} "
        f"(shards converted {report['shards_converted']}, skipped {report['shards_skipped']})"
    )
    for reason, count in report["rejected_by_reason"].items():
        print(f"  rejected {reason}: {count}")
    print(f"shards, rejects.jsonl and summary.json in {spec.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
