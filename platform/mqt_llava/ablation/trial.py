"""One ablation trial, as a Ray Tune function trainable: stage 1 (shared) -> stage 2 -> evaluation
sweep, through the same code as jobs/stage1.py, jobs/stage2.py and jobs/evaluate.py.

Everything a trial does is resumable by name, so a retried or restored trial redoes nothing finished:
stage runs resume from their last checkpoint (Ray Train V2, by storage and name), a finished stage
leaves a marker and is skipped, and the sweep skips (benchmark, budget) pairs already scored.

Stage 1 is shared: trials whose stage-1 settings are equal (`spec.stage1_key`) use one run (or the
spec's `stage1_export`, made before, where no trial's stage 1 differs). The first
trial to need it claims the key from a named registry actor and trains; the others wait for its
marker. A retry of the owning trial (same trial id) may claim it again and resumes the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import ray

from mqt_llava.ablation.spec import AblationSpec, Variant, stage1_key, stage_run
from mqt_llava.devices import Placement
from mqt_llava.tracking import RunTracker, TrackingSpec, tracking_uri

STAGE1_WAIT_S = 5.0


def registry_name(spec: AblationSpec) -> str:
    return f"mqt-ablation-stage1:{spec.name}"


@ray.remote(num_cpus=0)
class Stage1Registry:
    """Which trial trains each shared stage 1 (the others wait for its marker file)."""

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}

    def claim(self, key: str, trial_id: str) -> bool:
        if self.owners.get(key, trial_id) != trial_id:
            return False
        self.owners[key] = trial_id
        return True

    def release(self, key: str, trial_id: str) -> None:
        if self.owners.get(key) == trial_id:
            del self.owners[key]


def trial_slug(variant: Variant, spec: AblationSpec) -> str:
    return variant.label(spec.baseline).replace("/", "_")


def trial_dir(spec: AblationSpec, variant: Variant) -> Path:
    return spec.root / "trials" / trial_slug(variant, spec)


def tracking_for(spec: AblationSpec, **ids) -> TrackingSpec:
    return TrackingSpec(
        uri=tracking_uri(TrackingSpec(uri=spec.tracking_uri), str(spec.root)),
        experiment=spec.experiment,
        log_export=False,
        **ids,
    )


def train_stage(
    spec: AblationSpec,
    variant: Variant,
    stage: str,
    name: str,
    tracking: TrackingSpec,
    extra: tuple[str, ...] = (),
    callbacks=(),
) -> str:
    """One stage of a variant through jobs/stage{1,2}.py's code; returns its export. Skipped when its
    marker says done."""
    from mqt_llava.train.launch import run_stage
    from mqt_llava.train.plan import resolve_run

    marker = spec.root / "runs" / name / "done.json"
    if marker.exists():
        return json.loads(marker.read_text())["export"]
    config, overrides = stage_run(variant, spec, stage)
    run = resolve_run(config, overrides + list(extra), name, str(spec.root / "runs"), expect_stage=stage)
    run = dataclasses.replace(run, stage=run.stage.model_copy(update={"tracking": tracking}))
    result = run_stage(run, callbacks=list(callbacks))
    marker.write_text(json.dumps({"export": result.export_dir, "metrics": result.metrics}, default=str))
    return result.export_dir


def shared_stage1(spec: AblationSpec, variant: Variant, trial_id: str, parent_run_id: str | None) -> str:
    key = stage1_key(variant, spec)
    name = f"stage1-{key}"
    marker = spec.root / "runs" / name / "done.json"
    registry = ray.get_actor(registry_name(spec))
    waited = 0.0
    while not marker.exists():
        if ray.get(registry.claim.remote(key, trial_id)):
            try:
                tracking = tracking_for(spec, parent_run_id=parent_run_id)
                return train_stage(spec, variant, "stage1", name, tracking)
            finally:
                ray.get(registry.release.remote(key, trial_id))
        if waited % 60 == 0:
            print(f"[trial {trial_id}] waiting for shared stage 1 {name} (trained by another trial)", flush=True)
        time.sleep(STAGE1_WAIT_S)
        waited += STAGE1_WAIT_S
    return json.loads(marker.read_text())["export"]


def run_trial(config: dict, spec_json: str, parent_run_id: str | None) -> None:
    """The Tune trainable. `config["variant"]` is one grid point's label, `config["search"]` (where the
    spec declares a search space) the values drawn for this trial."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from mqt_llava.eval.evaluate import run_evaluation
    from mqt_llava.eval.runner import PairResult, write_atomic
    from mqt_llava.model.export import visual_token_range

    spec = AblationSpec.model_validate_json(spec_json)
    variant = spec.trial_variant(config)
    label, slug = variant.label(spec.baseline), trial_slug(variant, spec)
    trial_id = tune.get_context().get_trial_id() or slug
    out = trial_dir(spec, variant)
    finished = out / "result.json"
    if finished.exists():
        # Done before an interrupt reached Tune's bookkeeping: report it again, redo nothing.
        summary = json.loads(finished.read_text())
        scores = final_metrics([PairResult(**r) for r in summary["results"]], summary["max_tokens"])
        tune.report(summary.get("training", {}) | scores)
        return
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # The trial's MLflow run (found again on a retry): axes as params, stage 2's per-step metrics, the scores.
    tracker = RunTracker(tracking_for(spec, parent_run_id=parent_run_id), str(spec.root), run_name=label)
    tracker.log_params(variant.model_dump() | {"label": label, "stage1_key": stage1_key(variant, spec)})
    tracker.client.set_tag(tracker.run_id, "mqt_llava.ablation", spec.name)

    stage1_export = spec.stage1_export or shared_stage1(spec, variant, trial_id, parent_run_id)
    stage2_export = train_stage(
        spec,
        variant,
        "stage2",
        f"stage2-{slug}",
        tracking_for(spec, run_id=tracker.run_id),
        extra=(f"init_from={stage1_export}",),
        callbacks=[TuneReportCallback()],
    )
    low, maximum = visual_token_range(stage2_export)
    sweep = spec.eval.model_copy(update={"model": stage2_export, "out": str(out / "eval")}).sweep_config()
    results, _ = run_evaluation(sweep, tracking_for(spec, run_id=tracker.run_id))
    group = label.rsplit("/", 1)[0]
    budgets = spec.heldout.budgets_for(group, maximum, variant.fixed_tokens, low) if spec.heldout else []
    kinds = heldout_by_kind(spec, stage2_export, budgets, tracker)
    summary = {
        "label": label,
        "variant": variant.model_dump(),
        "trial_id": trial_id,
        "mlflow_run_id": tracker.run_id,
        "stage1_export": stage1_export,
        "stage2_export": stage2_export,
        "max_tokens": maximum,
        "kinds": kinds,
        "schedule_support": trained_budgets(stage2_export),
        "results": [dataclasses.asdict(r) for r in results],
        "training": training_metrics(spec, f"stage2-{slug}"),
        "seconds": time.perf_counter() - started,
        "pid": os.getpid(),
    }
    write_atomic(finished, json.dumps(summary, indent=2))  # the trial's last word: whole or absent
    tracker.finish()
    tune.report(summary["training"] | final_metrics(results, maximum))


def trained_budgets(export: str) -> list[int]:
    """The budgets stage 2 drew from, from the training record saved beside the export."""
    from mqt_llava.model.export import read_training_record, visual_token_range
    from mqt_llava.model.schedules import schedule_support

    s, (low, maximum) = read_training_record(export)["stage"]["schedule"], visual_token_range(export)
    return list(schedule_support(s["kind"], maximum, s["step"], s.get("tokens"), low))


def heldout_by_kind(spec: AblationSpec, export: str, budgets: list[int], tracker: RunTracker) -> dict:
    """Exact match on the corpus's held-out questions by kind at each budget, with every answer kept
    (per question, with the image, and with a blank one at the largest budget) in the trial's
    directory, where a restarted trial reads them back instead of asking again.

    The engine runs where the sweep's does (`eval.use_gpu`): on CPU in this process; on GPU in a Ray
    task holding one GPU for as long as it answers, since a trial holds only a CPU (its training runs
    take the GPUs). The trial directory is then on storage every node sees (a shared disk)."""
    if spec.heldout is None or not budgets:
        return {}
    remote = heldout_task_resources(spec)
    if remote:
        kinds, focus = ray.get(ray.remote(**remote)(heldout_answers).remote(spec, export, budgets))
    else:
        kinds, focus = heldout_answers(spec, export, budgets)
    for m in budgets:
        tracker.log_metrics({f"heldout/{k}": v for k, v in kinds[m].items()}, step=m)
    for m, f in focus.items():
        tracker.log_metrics({"heldout/token_similarity": f.similarity, "heldout/distinct_focus": f.distinct}, step=m)
    return kinds


def heldout_task_resources(spec: AblationSpec) -> dict | None:
    """The Ray resources of the task answering the held-out questions; None: in the trial's process."""
    placement = Placement(spec.eval.use_gpu)
    return {"num_gpus": placement.num_gpus, "num_cpus": spec.eval.actor_cpus} if placement.use_gpu else None


def heldout_answers(spec: AblationSpec, export: str, budgets: list[int]) -> tuple[dict, dict]:
    """(accuracy by kind at each budget, attention focus at each budget) on the held-out questions,
    answered by the sweep's inference backend (`eval.engine`)."""
    import torch

    from mqt_llava.eval import heldout
    from mqt_llava.inference import load_placed_engine

    out = Path(export).parent / "heldout"  # the trial's stage-2 run directory
    torch.set_num_threads(spec.eval.torch_threads or 1)
    engine = load_placed_engine(export, Placement(spec.eval.use_gpu), spec.eval.engine)
    question_set = spec.heldout.question_set()
    questions = question_set.questions(Path(spec.heldout.corpus).expanduser().resolve(), spec.heldout.scenes)
    runs = heldout.evaluate(engine, questions, budgets, out, question_set.blank, log=lambda _: None)  # blank at M
    kinds = {m: {k: v.estimate for k, v in runs[f"m={m}/image"].intervals(question_set.kinds).items()} for m in budgets}
    return kinds, heldout.focus(engine, questions, budgets)


def training_metrics(spec: AblationSpec, name: str) -> dict[str, float]:
    """A stage run's last training metrics (loss, lr, m, step, ...), from its marker: the trial's final
    report repeats stage 2's, so a scheduler comparing trials on them (ASHA) finds them in every report."""
    metrics = json.loads((spec.root / "runs" / name / "done.json").read_text())["metrics"]
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def final_metrics(results, maximum: int) -> dict[str, float]:
    """What Tune records for the trial: each headline at m = M and the normalised average there."""
    from mqt_llava.eval.report import headline, normalised_average

    at_max = [r for r in results if r.budget == maximum]
    metrics = {f"{r.benchmark}@M": headline(r) for r in at_max if headline(r) is not None}
    average = normalised_average(at_max)
    if average is not None:
        metrics["average@M"] = average
    return metrics
