"""The quickstart's steps on the toy world, in order: each a function of the run's `Context`, each
skipping what an earlier run of the same run directory finished (stages resume by run name, the
sweep by (benchmark, budget) pair, the ablation by trial). `jobs/quickstart.py` parses the command
line and runs them; this module is what they do.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field
from ray import serve

from mqt_llava.ablation.axes import AXES, mqt_option_axes
from mqt_llava.ablation.experiment import run_experiment
from mqt_llava.ablation.spec import AblationSpec
from mqt_llava.config import Spec, as_overrides, load_config, prefixed, preset_path
from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.eval import heldout
from mqt_llava.eval.evaluate import run_evaluation
from mqt_llava.eval.spec import EvalSpec
from mqt_llava.inference import load_engine
from mqt_llava.model.budgets import parse_budgets
from mqt_llava.model.spec import ModelSpec, max_visual_tokens
from mqt_llava.serve.app import run_on_loopback
from mqt_llava.serve.client import ServeClient
from mqt_llava.toy.base_models import preset_overrides
from mqt_llava.toy.benchmark_files import write_synthetic_benchmarks
from mqt_llava.toy.corpus import INSTRUCT_JSON, PRETRAIN_IMAGES, PRETRAIN_JSON, CorpusSpec, write_corpus
from mqt_llava.toy.heldout import QUESTIONS, QUESTIONS_REFERENCE, heldout_questions
from mqt_llava.toy.shipped import build_settings, read_manifest, ship_base_models, shipped_location
from mqt_llava.toy.spec import BaseModelsSpec, CorpusSize
from mqt_llava.toy.world import MAX_CELLS
from mqt_llava.tracking import TrackingSpec
from mqt_llava.train.launch import run_stage
from mqt_llava.train.plan import resolve_run

STEP_NAMES = ("data", "base models", "shards", "stage 1", "stage 2", "evaluate", "benchmarks", "serve", "ablation")


class WorldSpec(Spec):
    """The synthetic world and corpus sizes (mqt_llava.toy.corpus.CorpusSpec's fields)."""

    num_pretrain: int = Field(6000, ge=1, description="558K-like caption records")
    num_instruct: int = Field(6000, ge=1, description="665K-like instruction records")
    num_eval: int = Field(300, ge=1, description="held-out scenes (benchmark files and held-out questions)")
    cells: int = Field(4, ge=2, le=MAX_CELLS, description="cells along an image's long side (toy.world)")
    seed: int = 0


class QuickstartSpec(Spec):
    """jobs/quickstart.py's spec (packaged as tiny/quickstart.yaml). The sections model, base_models,
    stage1, stage2 and evaluate hold overrides of the preset's own configs, so `--set
    stage1.max_steps=3` reaches stage 1's spec and `--set model.connector.num_queries=64` the model."""

    preset: str = "tiny"
    run_dir: str = "./runs/quickstart"
    until: Literal[STEP_NAMES] = Field("ablation", description="stop after this step")  # type: ignore[valid-type]
    world: WorldSpec = WorldSpec()
    heldout_budgets: str = Field("1,4,M", description="step 6's budgets (M: the model's maximum)")
    heldout_scenes: int = Field(300, ge=1, description="held-out scenes step 6 asks about")
    serve_config: str = Field("./serve_apps/config.yaml", description="the Serve config step 8 deploys")
    model: dict[str, Any] = {}
    base_models: dict[str, Any] = {}
    stage1: dict[str, Any] = {}
    stage2: dict[str, Any] = {}
    evaluate: dict[str, Any] = {}

    def overrides(self, section: str) -> list[str]:
        """A section as `a.b=c` overrides of the config it belongs to."""
        return as_overrides(getattr(self, section))


@dataclass
class Context:
    spec: QuickstartSpec
    results: dict = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.spec.run_dir).expanduser().resolve()

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
        """Where base models made for this run go (when the shipped ones do not fit it)."""
        return self.run_dir / "base_models"

    @functools.cached_property
    def own_base_models(self) -> str | None:
        """Why this run makes its own base models, or None: the package's shipped ones fit it."""
        if self.spec.base_models:
            return f"base_models settings given ({', '.join(self.spec.overrides('base_models'))})"
        try:
            manifest = read_manifest(self.spec.preset)
        except FileNotFoundError as exc:
            return str(exc)
        settings = build_settings(
            self.base_models_spec(), load_config(ModelSpec, self.config("model"), self.spec.overrides("model"))
        )
        if settings["model"] != manifest["fingerprint"]["settings"]["model"]:
            return "the model's architectures are not the shipped parts' (model overrides)"
        world = {k: v for k, v in manifest["world"].items() if k not in CorpusSize.model_fields or k == "seed"}
        ours = asdict(self.corpus_spec())
        if any(ours[k] != (tuple(v) if isinstance(v, list) else v) for k, v in world.items()):
            return f"this world is not the shipped parts' ({world})"
        return None

    @property
    def storage(self) -> Path:
        return self.run_dir / "train"

    @property
    def model_overrides(self) -> list[str]:
        """The base models this run made (if it made its own), then the spec's own model overrides."""
        own = preset_overrides(self.base_models) if self.own_base_models else []
        return own + self.spec.overrides("model")

    def corpus_spec(self) -> CorpusSpec:
        return CorpusSpec(**self.spec.world.model_dump())

    def base_models_spec(self) -> BaseModelsSpec:
        overrides = [f"corpus={self.corpus}"] + self.spec.overrides("base_models")
        return load_config(BaseModelsSpec, self.config("base_models"), overrides)

    def config(self, name: str) -> Path:
        return preset_path(self.spec.preset, name)

    def evaluation(self) -> EvalSpec:
        """The preset's evaluation spec with the spec's overrides, on this run's export and files."""
        paths = [f"model={self.stage2_export}", f"out={self.run_dir / 'eval'}", f"data_root={self.benchmark_files}"]
        return load_config(EvalSpec, self.config("evaluate"), paths + self.spec.overrides("evaluate"))

    @property
    def tracking(self) -> TrackingSpec:
        """One MLflow store for the whole run: the stages', the sweep's and the ablation's runs side by side."""
        return TrackingSpec(uri=f"sqlite:///{self.storage / 'mlflow.db'}")

    @property
    def stage1_export(self) -> str:
        """Step 4's export (where an earlier run of this run directory left it, when step 4 was skipped)."""
        return self.results.get("stage1", {}).get("export") or str(self.storage / f"{self.spec.preset}-stage1/export")

    @property
    def stage2_export(self) -> Path:
        return self.storage / f"{self.spec.preset}-stage2" / "export"

    def model_spec(self) -> ModelSpec:
        return load_config(ModelSpec, self.config("model"), self.model_overrides)

    def next_steps(self) -> list[str]:
        """What to open after the steps that ran: the last lines a user reads."""
        lines = []
        if "stage2" in self.results:
            lines.append(f"  MLflow runs:   mlflow ui --backend-store-uri {self.tracking.uri}")
        if "benchmarks" in self.results:
            lines.append(f"  budget sweep:  {self.results['benchmarks']['report']}/table.md (plots/, advisor.md)")
        if "ablation" in self.results:
            lines.append(f"  ablation:      {self.results['ablation']['report']}")
        if "stage2" in self.results:
            lines.append(f"  serve it:      serve run {self.spec.serve_config}   (args.model: {self.stage2_export})")
            lines.append(f"  in Python:     InferenceEngine.from_export('{self.stage2_export}')  (docs/evaluation.md)")
        return lines or [f"  the run directory: {self.run_dir}"]


def step_data(ctx: Context) -> None:
    if not (ctx.corpus / "corpus.json").exists():
        write_corpus(ctx.corpus, ctx.corpus_spec())
    ctx.results["data"] = json.loads((ctx.corpus / "corpus.json").read_text())
    print(f"corpus: {ctx.corpus}")
    if not (ctx.benchmark_files / "synthetic.json").exists():
        written = write_synthetic_benchmarks(ctx.corpus, ctx.benchmark_files, limit=ctx.spec.heldout_scenes)
        print(f"synthetic benchmark files in {ctx.benchmark_files}: {written}")


def step_base_models(ctx: Context) -> None:
    """The preset's pretrained parts: the package's shipped ones (made once by jobs/base_models.py, as
    a user downloads CLIP and Vicuna), or, when the run asks for other ones, made for it here."""
    if ctx.own_base_models is None:
        manifest, where = read_manifest(ctx.spec.preset), shipped_location(ctx.spec.preset)
        built = manifest["built"]
        print(f"the package's base models ({where}; built {built['finished']} on {built['commit']})")
    else:
        print(f"base models made for this run in {ctx.base_models}: {ctx.own_base_models}")
        model = load_config(ModelSpec, ctx.config("model"), ctx.spec.overrides("model"))
        manifest, where = ship_base_models(ctx.base_models_spec(), model, ctx.base_models), str(ctx.base_models)
    for name, gate in manifest["gates"].items():
        figures = ", ".join(f"{k} {v:.1%}" for k, v in gate.items() if isinstance(v, float) and k != "gate")
        print(
            f"  gate {name} (every figure >= {gate['gate']:.0%}): {'passed' if gate['passed'] else 'FAILED'}: {figures}"
        )
    ctx.results["base_models"] = {"parts": where, "gates": manifest["gates"], "built": manifest["built"]}


def step_shards(ctx: Context) -> None:
    spec = ctx.model_spec()
    sets = {
        "558k": (ctx.corpus / PRETRAIN_JSON, ctx.corpus / PRETRAIN_IMAGES, "plain"),
        "665k": (ctx.corpus / INSTRUCT_JSON, ctx.corpus, "vicuna_v1"),
    }
    ctx.results["shards"] = {}
    for name, (json_path, image_root, template) in sets.items():
        rules = RecordRules(template, spec.max_length, max_visual_tokens(spec))
        out = ctx.shards / name
        report = prepare(PrepareJob(str(json_path), str(image_root), str(out), spec.tokenizer, rules)).as_dict()
        ctx.results["shards"][name] = report
        print(f"{name}: read {report['read']}, written {report['written']}, rejected {report['rejected_by_reason']}")


def train(ctx: Context, stage: str, overrides: list[str]) -> None:
    run = resolve_run(
        ctx.config(stage),
        overrides + ctx.spec.overrides(stage) + prefixed("model", ctx.model_overrides),
        name=f"{ctx.spec.preset}-{stage}",
        storage=str(ctx.storage),
        expect_stage=stage,
    )
    result = run_stage(run)
    ctx.results[stage] = dict(metrics=result.metrics, export=result.export_dir, steps=run.plan.total_steps)


def step_stage1(ctx: Context) -> None:
    train(ctx, "stage1", [f"data={ctx.shards / '558k'}"])


def step_stage2(ctx: Context) -> None:
    train(ctx, "stage2", [f"data={ctx.shards / '665k'}", f"init_from={ctx.stage1_export}"])


def step_evaluate(ctx: Context) -> None:
    """Held-out questions at each budget, with the image and with a blank one, beside the answer prior."""
    engine = load_engine(ctx.stage2_export, ctx.evaluation().engine)
    questions = heldout_questions(ctx.corpus, limit=ctx.spec.heldout_scenes)
    budgets = parse_budgets(
        ctx.spec.heldout_budgets, engine.max_visual_tokens, "heldout_budgets", engine.min_visual_tokens
    )
    runs = heldout.evaluate(engine, questions, budgets, ctx.run_dir / "heldout", QUESTIONS.blank)
    scenes = len({q.scene for q in questions})
    print(
        f"\nheld-out exact match (%), {len(questions)} questions about {scenes} scenes; 'blank': the same model "
        f"with an empty image; 'majority': each kind's most common answer, without looking:"
    )
    print(heldout.table(runs, QUESTIONS.kinds))
    top = max(budgets)
    verdict = heldout.uses_image(runs, top)
    print(f"uses the image at m = {top} (image - blank): {verdict.summary()}")
    gates = QUESTIONS.gates(runs, budgets)
    for name, figure, threshold, passed in gates:
        print(f"  pilot gate {name}: {100 * figure:.1f} (>= {100 * threshold:g}) {'passed' if passed else 'FAILED'}")
    focus = heldout.focus(engine, questions, budgets)
    for m in focus:
        print(f"  {focus[m].summary()}")
    ctx.results["evaluate"] = dict(
        questions=len(questions),
        scores={
            label: {k: v.to_dict() for k, v in run.intervals(QUESTIONS.kinds).items()} for label, run in runs.items()
        },
        uses_image=verdict.verdict,
        pilot_gates={name: {"figure": f, "threshold": t, "passed": p} for name, f, t, p in gates},
        focus={m: f.to_dict() for m, f in focus.items()},
    )


def step_benchmarks(ctx: Context) -> None:
    spec = ctx.evaluation()
    results, paths = run_evaluation(spec.sweep_config(), ctx.tracking)
    print("\n" + paths["table"].read_text() + "\n" + paths["advisor"].read_text())
    if "controls" in paths:
        print(paths["controls"].read_text())
    ctx.results["benchmarks"] = {
        "report": spec.out,
        "scores": {f"{r.benchmark}@{r.budget}": r.scores for r in results},
    }


def step_serve(ctx: Context) -> None:
    app = yaml.safe_load(Path(ctx.spec.serve_config).read_text())["applications"][0]
    args = app["args"] | {"model": str(ctx.stage2_export)}
    quiet = {"log_level": "WARNING", "enable_access_log": False}  # the step prints what it asks and gets
    url = run_on_loopback(args, "quickstart", quiet)
    try:
        client = ServeClient(url)
        question = heldout_questions(ctx.corpus, limit=1)[0]
        models = client.models()
        print(f"serving {args['model']} at {url}; models {models}")
        print(f"question: {question.text.splitlines()[0]} (answer: {question.answer})")
        answers = {}
        for model in models:
            start = time.perf_counter()
            response = client.chat(model, question.text, question.image_path, temperature=0)
            response.raise_for_status()
            reply = response.json()
            answers[model] = {
                "tier": reply["model"],
                "visual_tokens": reply["visual_tokens"],
                "answer": reply["choices"][0]["message"]["content"],
                "usage": reply["usage"],
            }
            print(
                f"  {model:>9} -> tier {reply['model']:<9} m = {reply['visual_tokens']:<3} "
                f"prompt tokens {reply['usage']['prompt_tokens']:<4} {time.perf_counter() - start:5.2f}s  "
                f"{answers[model]['answer']!r}"
            )
        bad = client.chat(models[0], question.text, question.image_path, temperature=0, visual_tokens=10**6)
        print(f"  visual_tokens = 10**6 -> {bad.status_code}: {bad.json()['error']['message']}")
        ctx.results["serve"] = {"models": models, "answers": answers, "refused": bad.status_code}
    finally:
        serve.delete("quickstart")
        serve.shutdown()


def ablation_spec(ctx: Context) -> AblationSpec:
    """Step 9's grid: linear vs log schedule, both from step 4's stage-1 export (they differ in stage 2
    only), its stage-1 reference saying what step 4 ran. The grid's baseline is the run's own model:
    a variant sets every axis it has (the MQT's order and keys included), so the baseline takes the
    values the run's connector has, not the axes' defaults."""
    sweep = ctx.evaluation()
    quick = ["resources.worker_cpus=0.4"]
    connector = ctx.model_spec().connector
    options = {name: AXES[name].sets["model"][0].removeprefix("connector.") for name in mqt_option_axes()}
    baseline = (
        {name: getattr(connector, option) for name, option in options.items()}
        if connector.kind == "mqt"
        else {"connector": connector.kind}
    )
    return AblationSpec(
        name="quickstart",
        storage=str(ctx.run_dir / "ablation"),
        model=ctx.spec.preset,
        model_overrides=ctx.model_overrides,
        baseline=baseline,
        stage1={
            "config": str(ctx.config("stage1")),
            "overrides": [f"data={ctx.shards / '558k'}", *ctx.spec.overrides("stage1")],  # what step 4 ran
        },
        stage2={
            "config": str(ctx.config("stage2")),
            "overrides": [f"data={ctx.shards / '665k'}", "max_steps=10", *quick, *ctx.spec.overrides("stage2")],
        },
        stage1_export=ctx.stage1_export,
        eval=sweep.model_copy(
            update={
                "model": None,
                "out": None,
                "benchmarks": ["pope"],
                "budgets": "M",
                "limit": min(sweep.limit or 20, 20),
                "actors": 1,
            }
        ),
        heldout={
            "questions": QUESTIONS_REFERENCE,
            "corpus": str(ctx.corpus),
            "scenes": min(ctx.spec.heldout_scenes, 20),
        },
        axes={"schedule": ["linear", "log"]},
        tracking_uri=ctx.tracking.uri,
        experiment="quickstart-ablation",
    )


def step_ablation(ctx: Context) -> None:
    """The ablation machinery on the quickstart's world, briefly (tiny/ablation is the full toy-scale
    reproduction)."""
    outcome = run_experiment(ablation_spec(ctx))
    if outcome["errors"]:
        raise RuntimeError(f"{len(outcome['errors'])} ablation trial(s) failed:\n" + "\n".join(outcome["errors"]))
    report = Path(outcome["report"])
    print("\n" + report.read_text())
    ctx.results["ablation"] = {
        "report": str(report),
        "trials": outcome["trials"],
        "mlflow_run_id": outcome["mlflow_run_id"],
    }


STEPS = [  # in STEP_NAMES' order
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
