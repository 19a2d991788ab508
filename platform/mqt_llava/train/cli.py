"""The command line of jobs/stage1.py and jobs/stage2.py: one spec (a StageSpec YAML), `--set` on
its fields (`--set model.connector.num_queries=64` reaches the model preset), then the same run on Ray
Train (the default) or, when torchrun started the process, under torchrun without Ray."""

from __future__ import annotations

import argparse
import os
import sys

from mqt_llava.config import ConfigError
from mqt_llava.output import configure_output
from mqt_llava.train.plan import resolve_run
from mqt_llava.train.torchrun import run_with_torchrun, under_torchrun


def main(stage_name: str, argv: list[str] | None = None):
    parser = argparse.ArgumentParser(
        prog=f"jobs/{stage_name}.py", description=f"Train {stage_name} on Ray Train (or under torchrun) + DeepSpeed."
    )
    parser.add_argument(
        "--config",
        default=f"tiny/{stage_name}",
        help="a StageSpec: a YAML file or a packaged config such as llava-7b/stage1",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the spec, e.g. --set lr=1e-4; model.<field> reaches the model "
        "preset, e.g. --set model.connector.num_queries=64",
    )
    parser.add_argument("--name", help="run name; the same name again resumes (default <model>-<stage>)")
    parser.add_argument("--storage", default="runs/train", help="where runs live: a directory or a URI")
    parser.add_argument("--verbose", action="store_true", help="keep Ray's and the libraries' own logs")
    args = parser.parse_args(argv)
    configure_output(args.verbose)
    try:
        run = resolve_run(args.config, args.overrides, args.name, args.storage, stage_name)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if under_torchrun():
        run_with_torchrun(run)
        # The work is done and saved. torch's gloo and TCPStore threads outlive
        # destroy_process_group(), and about one exit in twenty then aborts in a C++ static
        # destructor (rc -6, measured in tests/e2e/test_deepspeed_on_cpu.py): skip that race.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    from mqt_llava.train.launch import report_result, run_stage  # Ray, only on this path

    result = run_stage(run)
    report_result(result)
    return result
