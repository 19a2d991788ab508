"""An ablation experiment: the grid of variants (crossed with a search space, where the config
declares one, and under its trial scheduler) as a Ray Tune run, an MLflow parent run with a child per
trial, and the report at the end.

The experiment lives at `<storage>/<name>/`: `tune/` (Tune's state, results and TensorBoard files),
`runs/` (the stage runs, shared stage 1s included), `trials/<variant>/` (each trial's evaluation and
result.json) and `report/`. Running the same config again restores the Tune run (`Tuner.restore`):
finished trials are kept, unfinished and errored ones run again and resume what they had done.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import ray
import yaml
from ray import tune

from mqt_llava.ablation.claims import check_claims, claims_markdown, controls_markdown, per_seed_markdown
from mqt_llava.ablation.report import Trial, load_trials, write_report
from mqt_llava.ablation.spec import AblationSpec
from mqt_llava.ablation.trial import Stage1Registry, registry_name, run_trial, tracking_for, trial_slug
from mqt_llava.output import scoped_environ
from mqt_llava.ray_runtime import init_ray
from mqt_llava.tracking import RunTracker

TRIAL_DRIVER_CPUS = 0.01  # the trial function only drives Ray Train and Ray Data, which ask for their own CPUs


def trial_dirname(trial, spec: AblationSpec) -> str:
    """Tune's default name spells out the whole variant dict; the trial id and the label say enough."""
    return f"{trial.trial_id}_{trial_slug(spec.trial_variant(trial.config), spec)}"


def concurrency(spec: AblationSpec) -> int:
    if spec.max_concurrent_trials:
        return spec.max_concurrent_trials
    return max(1, math.floor(ray.cluster_resources().get("CPU", 0) / spec.trial_cpus + 1e-9))


def experiment_report(spec: AblationSpec) -> tuple[Path, list[Trial]]:
    """The report and claims from the trials finished so far (all of them at the end of a run)."""
    trials = load_trials(spec.root)
    questions = spec.heldout.question_set() if spec.heldout else None
    checked = check_claims(trials, spec.margin, question_set=questions) if trials else []
    claims = claims_markdown(checked) if trials else None
    per_seed = per_seed_markdown(trials, spec.margin, checked, questions)
    if per_seed:
        claims += "\n" + per_seed
    controls = controls_markdown(trials, questions) if trials else None
    kinds = questions.kinds if questions else None
    report = write_report(
        trials, spec.root / "report", spec.eval.advisor_points, f"Ablation {spec.name}", claims, controls, kinds
    )
    return report, trials


def run_experiment(spec: AblationSpec, log=print, trainable=run_trial) -> dict:
    """Runs (or resumes) the grid and writes the report. `trainable` is the Tune function trainable
    with run_trial's signature (tests wrap run_trial to inject faults)."""
    init_ray()
    root = spec.root
    root.mkdir(parents=True, exist_ok=True)
    saved = root / "ablation.yaml"
    if saved.exists() and yaml.safe_load(saved.read_text()) != spec.model_dump(mode="json"):
        raise ValueError(
            f"{saved} holds a different config for experiment {spec.name!r}: use another name, "
            "or delete the experiment directory to start over"
        )
    saved.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))

    parent = RunTracker(tracking_for(spec), str(root), run_name=spec.name)
    parent.log_params(
        {
            "design": spec.design,
            "axes": {k: ",".join(map(str, v)) for k, v in spec.axes.items()},
            "seeds": ",".join(map(str, spec.seeds)),
            "fixed_budgets": ",".join(map(str, spec.fixed_budgets)),
            "baseline": spec.baseline.model_dump(),
            "search": spec.search,
            "num_samples": spec.num_samples,
            "scheduler": spec.scheduler,
        }
    )
    parent.log_artifact(saved)
    # Held for the whole fit: an actor whose last handle goes out of scope is killed.
    registry = Stage1Registry.options(name=registry_name(spec), get_if_exists=True).remote()

    count = spec.trial_count()
    trainable = tune.with_resources(
        tune.with_parameters(trainable, spec_json=spec.model_dump_json(), parent_run_id=parent.run_id),
        {"CPU": TRIAL_DRIVER_CPUS},
    )
    path = root / "tune"
    if tune.Tuner.can_restore(str(path)):
        log(f"[ablation] restoring {path}: finished trials are kept")
        tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            # Labels, not the variants' dicts: Tune's status table shows this column, and a dict there
            # reads `...ed_tokens': None}` for every trial. Crossed with the search space's draws.
            param_space=spec.param_space(),
            tune_config=tune.TuneConfig(
                num_samples=spec.num_samples,
                scheduler=spec.trial_scheduler(),
                max_concurrent_trials=concurrency(spec),
                trial_dirname_creator=partial(trial_dirname, spec=spec),
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(root), failure_config=tune.FailureConfig(max_failures=spec.max_failures)
            ),
        )
    log(
        f"[ablation] {spec.name}: {count} trials ({spec.design}{', searched' if spec.search else ''}), "
        f"up to {concurrency(spec)} at once; "
        f"MLflow {parent.uri} experiment {spec.experiment!r} run {parent.run_id}"
    )
    # Trials keep the job's working directory (Tune would chdir each into its own trial directory), so
    # relative paths in the config (stage YAMLs, data, pretrained parts) mean what they mean to the job.
    # Tune reads that from the variable, copied into each trial's process when the trial starts.
    with scoped_environ(RAY_CHDIR_TO_TRIAL_DIR="0"):
        grid = tuner.fit()
    del registry
    errors = [str(r.error) for r in grid if r.error is not None]
    report, trials = experiment_report(spec)
    parent.log_artifact(report.parent, "report")
    parent.finish("FAILED" if errors else "FINISHED")
    stopped = count - len(trials) - len(errors)  # by the scheduler, before their evaluation
    log(
        f"[ablation] {len(trials)}/{count} trials finished"
        + (f", {stopped} stopped early by the scheduler" if spec.scheduler else "")
        + f"; report {report}"
    )
    return {
        "report": report,
        "trials": len(trials),
        "variants": count,
        "stopped": stopped,
        "errors": errors,
        "mlflow_run_id": parent.run_id,
    }
