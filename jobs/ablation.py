"""The ablation grid (the paper's Table 2 questions and more) on Ray Tune: every trial trains stage 1
(shared between trials with equal stage-1 settings), stage 2, and runs the evaluation sweep, then
answers the held-out questions of the question set the config names (`heldout.questions`; tiny/ablation
names the toy world's, mqt_llava.toy.heldout:QUESTIONS), on which the claims are tested.

    python jobs/ablation.py --config tiny/ablation          # this machine, toy scale
    python jobs/ablation.py --config ... --set design=full_factorial --set 'seeds=[0,1,2]'
    python jobs/ablation.py --config ... --set 'search={stage2.lr: {loguniform: [1.0e-4, 1.0e-2]}}' \
        --set num_samples=4 --set 'scheduler={kind: asha, metric: loss, mode: min, max_t: 100}'
    ray job submit --working-dir . --runtime-env configs/runtime_env.yaml -- python jobs/ablation.py --config ...

The same config again resumes the experiment (Tuner.restore): finished trials are not redone.
`--report` writes the report from the trials finished so far, without running any.
"""

from __future__ import annotations

import argparse
import sys

from mqt_llava.ablation.experiment import experiment_report, run_experiment
from mqt_llava.ablation.spec import AblationSpec
from mqt_llava.config import ConfigError, load_config
from mqt_llava.output import configure_output
from mqt_llava.tracking import TrackingSpec, tracking_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny/ablation", help="an AblationSpec: a YAML file or a packaged config")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set design=full_factorial --set 'seeds=[0,1,2]'",
    )
    parser.add_argument("--list", action="store_true", help="print the grid's variants and exit")
    parser.add_argument(
        "--report", action="store_true", help="write the report from the trials finished so far and exit"
    )
    parser.add_argument("--verbose", action="store_true", help="keep Ray's, Tune's and the libraries' own logs")
    args = parser.parse_args(argv)
    try:
        spec = load_config(AblationSpec, args.config, args.overrides)
        variants = spec.variants()
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    configure_output(args.verbose)  # after the checks: a refused command changes nothing in its process
    if args.list:
        for v in variants:
            print(v.label(spec.baseline))
        if spec.search:
            print(f"each with {', '.join(spec.search)} drawn from the search space: {spec.trial_count()} trials")
        return 0
    if args.report:
        report, trials = experiment_report(spec)
        print(f"report from {len(trials)}/{spec.trial_count()} finished trials: {report}")
        return 0
    outcome = run_experiment(spec)
    uri = tracking_uri(TrackingSpec(uri=spec.tracking_uri), str(spec.root))
    print(f"report: {outcome['report']}")
    print(f"MLflow: mlflow ui --backend-store-uri {uri} (experiment {spec.experiment})")
    if outcome["errors"]:
        print(f"{len(outcome['errors'])} trial(s) failed:\n" + "\n".join(outcome["errors"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
