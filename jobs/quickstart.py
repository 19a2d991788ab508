"""Quickstart: the tiny pipeline end to end, one step after another, on one machine.

    python jobs/quickstart.py                     # embedded local Ray, tiny preset, ~15 min on 2 cores
    ray job submit -- python jobs/quickstart.py   # the same on a cluster

Steps:
  1. data         a synthetic corpus in LLaVA's formats (558K-like captions, 665K-like instructions,
                  held-out evaluation scenes), and benchmark files in the official formats (POPE,
                  VQAv2, GQA, ScienceQA, MME, MMBench) made from the held-out scenes
  2. base models  the tiny preset's pretrained parts from that corpus: tokenizer, CLIP, Llama LM
  3. shards       both sets converted to Parquet shards (rejects counted)
  4. stage 1      the MQT alone, plain template, all M tokens (Ray Train + DeepSpeed ZeRO-2)
  5. stage 2      MQT + LLM, vicuna_v1, m drawn each step (ZeRO-3), from stage 1's export
  6. evaluate     held-out exact match at each budget next to the majority-answer baseline
  7. benchmarks   the budget sweep over the benchmark files (jobs/evaluate.py's library: Ray Data
                  engine actors, results.csv, Table 1, plots, advisor, MLflow)
  8. serve        serve_apps/config.yaml's application on the stage-2 export, on loopback: one chat
                  completion per model id (each tier and `auto`) over HTTP, and a refused bad request
  9. ablation     a two-trial Ray Tune grid (linear vs log schedule, one shared stage 1, short stages,
                  two benchmarks) with MLflow runs and ablation_report.md; the toy-scale reproduction
                  of the paper's Table 2 is configs/tiny/ablation.yaml (jobs/ablation.py)

Every step skips what an earlier run of the same --run-dir finished (stages resume by run name,
the sweep by (benchmark, budget) pair, the ablation by trial).
"""

from __future__ import annotations

import argparse
import base64
import json
import mimetypes
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import requests
import yaml
from ray import serve
from ray.data import DataContext

from mqt_llava.ablation.experiment import run_experiment
from mqt_llava.ablation.spec import AblationSpec
from mqt_llava.config import REPO_ROOT, BaseModelsSpec, ModelSpec, load_config, preset_path
from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.data.synthetic_corpus import INSTRUCT_JSON, PRETRAIN_IMAGES, PRETRAIN_JSON, CorpusSpec, write_corpus
from mqt_llava.eval.evaluate import parse_budgets, run_evaluation
from mqt_llava.eval.runner import SweepConfig
from mqt_llava.eval.synthetic_benchmarks import WRITERS, write_synthetic_benchmarks
from mqt_llava.eval.synthetic_qa import KINDS, exact_match, heldout_questions, majority_baseline
from mqt_llava.inference import InferenceEngine
from mqt_llava.ray_runtime import init_ray
from mqt_llava.train.base_models import make_base_models, preset_overrides
from mqt_llava.train.launch import resolve_run, run_stage


@dataclass
class Context:
    args: argparse.Namespace
    run_dir: Path
    results: dict = field(default_factory=dict)

    @property
    def corpus(self) -> Path:
        return self.run_dir / "data"

    @property
    def shards(self) -> Path:
        return self.run_dir / "shards"

    @property
    def benchmark_files(self) -> Path:
        return self.run_dir / "benchmarks"

    @property
    def base_models(self) -> Path:
        return self.run_dir / "base_models"

    @property
    def storage(self) -> Path:
        return self.run_dir / "train"

    @property
    def model_overrides(self) -> list[str]:
        return preset_overrides(self.base_models) + self.args.model_overrides

    def model_spec(self) -> ModelSpec:
        return load_config(ModelSpec, preset_path(self.args.preset, "model"), self.model_overrides)


def step_data(ctx: Context) -> None:
    pretrain, instruct, held_out = ctx.args.corpus
    if not (ctx.corpus / "corpus.json").exists():
        sizes = dict(num_pretrain=pretrain, num_instruct=instruct, num_eval=held_out)
        write_corpus(ctx.corpus, CorpusSpec(**{"seed": 0, **ctx.args.world, **sizes}))
    ctx.results["data"] = json.loads((ctx.corpus / "corpus.json").read_text())
    print(f"corpus: {ctx.corpus}")
    if not (ctx.benchmark_files / "synthetic.json").exists():
        written = write_synthetic_benchmarks(ctx.corpus, ctx.benchmark_files, limit=ctx.args.eval_scenes)
        print(f"synthetic benchmark files in {ctx.benchmark_files}: {written}")


def step_base_models(ctx: Context) -> None:
    report_path = ctx.base_models / "report.json"
    if not report_path.exists():
        overrides = [f"corpus={ctx.corpus}"] + ctx.args.base_overrides
        spec = load_config(BaseModelsSpec, preset_path(ctx.args.preset, "base_models"), overrides)
        model = load_config(ModelSpec, preset_path(ctx.args.preset, "model"), ctx.args.model_overrides)
        report = make_base_models(spec, model, ctx.base_models)
        report_path.write_text(json.dumps(report, indent=2))
    ctx.results["base_models"] = json.loads(report_path.read_text())


def step_shards(ctx: Context) -> None:
    spec = ctx.model_spec()
    sets = {
        "558k": (ctx.corpus / PRETRAIN_JSON, ctx.corpus / PRETRAIN_IMAGES, "plain"),
        "665k": (ctx.corpus / INSTRUCT_JSON, ctx.corpus, "vicuna_v1"),
    }
    ctx.results["shards"] = {}
    for name, (json_path, image_root, template) in sets.items():
        rules = RecordRules(template, spec.max_length, spec.mqt.num_queries)
        out = ctx.shards / name
        report = prepare(PrepareJob(str(json_path), str(image_root), str(out), spec.tokenizer, rules)).as_dict()
        ctx.results["shards"][name] = report
        print(f"{name}: read {report['read']}, written {report['written']}, rejected {report['rejected_by_reason']}")


def train(ctx: Context, stage: str, overrides: list[str]) -> None:
    run = resolve_run(
        preset_path(ctx.args.preset, stage),
        overrides + getattr(ctx.args, f"{stage}_overrides"),
        ctx.model_overrides,
        name=f"{ctx.args.preset}-{stage}",
        storage=str(ctx.storage),
        expect_stage=stage,
    )
    result = run_stage(run)
    ctx.results[stage] = dict(metrics=result.metrics, export=result.export_dir, steps=run.plan.total_steps)


def step_stage1(ctx: Context) -> None:
    train(ctx, "stage1", [f"data={ctx.shards / '558k'}"])


def step_stage2(ctx: Context) -> None:
    stage1_export = ctx.results.get("stage1", {}).get("export") or str(ctx.storage / f"{ctx.args.preset}-stage1/export")
    train(ctx, "stage2", [f"data={ctx.shards / '665k'}", f"init_from={stage1_export}"])


def step_evaluate(ctx: Context) -> None:
    export = ctx.storage / f"{ctx.args.preset}-stage2" / "export"
    engine = InferenceEngine.from_export(export)
    questions = heldout_questions(ctx.corpus, limit=ctx.args.eval_scenes)
    rows = {"majority baseline": majority_baseline(questions)}
    for m in ctx.args.budget_list:
        rows[f"m = {m}"] = exact_match(engine, questions, m)
    print(f"\nheld-out exact match, {len(questions)} questions ({ctx.args.eval_scenes} scenes x {len(KINDS)} kinds):")
    columns = list(KINDS) + ["all"]
    print(f"{'':>18}" + "".join(f"{c:>11}" for c in columns))
    for label, scores in rows.items():
        print(f"{label:>18}" + "".join(f"{scores.get(c, float('nan')):>11.3f}" for c in columns))
    ctx.results["evaluate"] = dict(questions=len(questions), scores=rows)


def step_benchmarks(ctx: Context) -> None:
    config = SweepConfig(
        model=str(ctx.storage / f"{ctx.args.preset}-stage2" / "export"),
        out=ctx.run_dir / "eval",
        data_root=ctx.benchmark_files,
        benchmarks=list(WRITERS),
        budgets=ctx.args.sweep_budget_list,
        limit=ctx.args.sweep_limit,
        batch_size=16,
        actors=2,
        actor_cpus=0.5,
        torch_threads=1,
    )
    results, paths = run_evaluation(config)
    print("\n" + paths["table"].read_text() + "\n" + paths["advisor"].read_text())
    ctx.results["benchmarks"] = {
        "report": str(config.out),
        "scores": {f"{r.benchmark}@{r.budget}": r.scores for r in results},
    }


def step_serve(ctx: Context) -> None:
    sys.path.insert(0, str(REPO_ROOT))  # serve_apps (init_ray puts it on the local workers' path)
    from serve_apps.mqt_app import run_on_loopback

    app = yaml.safe_load((REPO_ROOT / "serve_apps" / "config.yaml").read_text())["applications"][0]
    args = app["args"] | {"model": str(ctx.storage / f"{ctx.args.preset}-stage2" / "export")}
    quiet = {"log_level": "WARNING", "enable_access_log": False}  # the step prints what it asks and gets
    url = run_on_loopback(args, "quickstart", quiet)
    try:
        question = heldout_questions(ctx.corpus, limit=1)[0]
        mime = mimetypes.guess_type(question.image_path.name)[0] or "image/png"
        image = f"data:{mime};base64," + base64.b64encode(question.image_path.read_bytes()).decode()
        content = [{"type": "text", "text": question.text}, {"type": "image_url", "image_url": {"url": image}}]
        models = [m["id"] for m in requests.get(f"{url}/v1/models", timeout=30).json()["data"]]
        print(f"serving {args['model']} at {url}; models {models}")
        print(f"question: {question.text.splitlines()[0]} (answer: {question.answer})")
        answers = {}
        for model in models:
            start = time.perf_counter()
            body = {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0}
            response = requests.post(f"{url}/v1/chat/completions", json=body, timeout=120)
            response.raise_for_status()
            reply = response.json()
            answers[model] = {"tier": reply["model"], "visual_tokens": reply["visual_tokens"],
                              "answer": reply["choices"][0]["message"]["content"], "usage": reply["usage"]}  # fmt: skip
            print(f"  {model:>9} -> tier {reply['model']:<9} m = {reply['visual_tokens']:<3} "
                  f"prompt tokens {reply['usage']['prompt_tokens']:<4} {time.perf_counter() - start:5.2f}s  "
                  f"{answers[model]['answer']!r}")  # fmt: skip
        bad = requests.post(f"{url}/v1/chat/completions", json=body | {"visual_tokens": 10**6}, timeout=30)
        print(f"  visual_tokens = 10**6 -> {bad.status_code}: {bad.json()['error']['message']}")
        ctx.results["serve"] = {"models": models, "answers": answers, "refused": bad.status_code}
    finally:
        serve.delete("quickstart")
        serve.shutdown()


def step_ablation(ctx: Context) -> None:
    """The ablation machinery on the quickstart's world, briefly: linear vs log schedule sharing one stage 1
    (configs/tiny/ablation.yaml is the full toy-scale reproduction)."""
    a = ctx.args
    spec = AblationSpec(
        name="quickstart", storage=str(ctx.run_dir / "ablation"), model=a.preset, model_overrides=ctx.model_overrides,
        stage1={"config": str(preset_path(a.preset, "stage1")),
                "overrides": [f"data={ctx.shards / '558k'}", "max_steps=20", "resources.worker_cpus=0.4",
                              *a.stage1_overrides]},
        stage2={"config": str(preset_path(a.preset, "stage2")),
                "overrides": [f"data={ctx.shards / '665k'}", "max_steps=40", "resources.worker_cpus=0.4",
                              *a.stage2_overrides]},
        eval={"data_root": str(ctx.benchmark_files), "benchmarks": ["pope", "mme"], "budgets": a.sweep_budgets,
              "limit": min(a.sweep_limit, 100), "heldout_corpus": str(ctx.corpus),
              "heldout_scenes": min(a.eval_scenes, 30)},
        axes={"schedule": ["linear", "log"]},
        tracking_uri=f"sqlite:///{ctx.storage / 'mlflow.db'}", experiment="quickstart-ablation",
    )  # fmt: skip
    outcome = run_experiment(spec)
    if outcome["errors"]:
        raise RuntimeError(f"{len(outcome['errors'])} ablation trial(s) failed:\n" + "\n".join(outcome["errors"]))
    report = Path(outcome["report"])
    print("\n" + report.read_text())
    ctx.results["ablation"] = {
        "report": str(report),
        "trials": outcome["trials"],
        "mlflow_run_id": outcome["mlflow_run_id"],
    }


STEPS = [
    ("data", step_data),
    ("base models", step_base_models),
    ("shards", step_shards),
    ("stage 1", step_stage1),
    ("stage 2", step_stage2),
    ("evaluate", step_evaluate),
    ("benchmarks", step_benchmarks),
    ("serve", step_serve),
    ("ablation", step_ablation),
]


WORLD_FIELDS = ("grid", "max_objects")  # CorpusSpec fields --world may set


def world_field(text: str) -> tuple[str, int]:
    """--world grid=4: a field of the synthetic world (CorpusSpec) other than its counts and seed."""
    key, _, value = text.partition("=")
    if key not in WORLD_FIELDS or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected KEY=N with KEY one of {', '.join(WORLD_FIELDS)}, got {text!r}")
    return key, int(value)


def counts(text: str) -> tuple[int, int, int]:
    values = tuple(int(x) for x in text.split(","))
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError("expected three positive counts: PRETRAIN,INSTRUCT,EVAL")
    return values  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--corpus", type=counts, default=(6000, 6000, 300), metavar="PRETRAIN,INSTRUCT,EVAL",
                        help="synthetic records per set")  # fmt: skip
    parser.add_argument("--budgets", default="2,M", help="evaluation budgets, comma-separated; M = the maximum")
    parser.add_argument("--eval-scenes", type=int, default=300, help="held-out scenes to ask about")
    parser.add_argument("--sweep-budgets", default="2,4,8,16,M", help="the benchmark sweep's budgets")
    parser.add_argument("--sweep-limit", type=int, default=600,
                        help="about N questions per benchmark in the sweep (a seeded random draw)")  # fmt: skip
    parser.add_argument("--world", type=world_field, action="append", default=[], metavar="KEY=N",
                        help="the synthetic world: grid (an N x N layout, 3) or max_objects (4)")  # fmt: skip
    parser.add_argument("--until", choices=[name for name, _ in STEPS], default=STEPS[-1][0],
                        help="stop after this step ('shards': what an ablation trains on)")  # fmt: skip
    for flag, dest, what in (
        ("--model-set", "model_overrides", "the model preset"),
        ("--base-set", "base_overrides", "base_models.yaml"),
        ("--stage1-set", "stage1_overrides", "stage1.yaml"),
        ("--stage2-set", "stage2_overrides", "stage2.yaml"),
    ):
        parser.add_argument(flag, dest=dest, action="append", default=[], metavar="KEY=VALUE",
                            help=f"override a field of {what}")  # fmt: skip
    args = parser.parse_args()
    args.world = dict(args.world)
    M = load_config(ModelSpec, preset_path(args.preset, "model"), args.model_overrides).mqt.num_queries
    try:  # checked before anything runs: a bad budget must not surface after 15 minutes of training
        args.budget_list = parse_budgets(args.budgets, M)
        args.sweep_budget_list = parse_budgets(args.sweep_budgets, M)
    except ValueError as exc:
        parser.error(str(exc))
    ctx = Context(args=args, run_dir=args.run_dir.resolve())
    ctx.run_dir.mkdir(parents=True, exist_ok=True)

    where = init_ray()
    DataContext.get_current().enable_progress_bars = False  # progress comes as periodic lines
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"Ray: {where} ({cpus:.0f} CPUs); preset {args.preset}; run dir {ctx.run_dir}")
    started = time.perf_counter()
    steps = STEPS[: [name for name, _ in STEPS].index(args.until) + 1]
    for i, (name, step) in enumerate(steps, 1):
        print(f"\n=== step {i}/{len(steps)}: {name} ===", flush=True)
        start = time.perf_counter()
        step(ctx)
        seconds = time.perf_counter() - start
        ctx.results.setdefault("seconds", {})[name] = seconds
        print(f"--- {name} done in {seconds:.1f}s", flush=True)
    summary = ctx.run_dir / "summary.json"
    summary.write_text(json.dumps(ctx.results, indent=2, default=str))
    print(f"\nall steps in {time.perf_counter() - started:.0f}s; summary: {summary}")


if __name__ == "__main__":
    main()
