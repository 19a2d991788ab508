"""Every extension point docs/extending.md describes, exercised as it says: each test defines a toy
instance here, registers it (the registration alone: no other file changes), uses it through the
platform's public path, and removes its registration after."""

import json
from typing import Literal

import numpy as np
import pytest
import torch
import yaml
from pydantic import Field
from torch import nn

from mqt_llava.ablation import search
from mqt_llava.ablation.axes import AXES, Axis, register_axis
from mqt_llava.ablation.spec import AblationSpec, stage1_key
from mqt_llava.config import load_config
from mqt_llava.eval.benchmarks import BENCHMARKS, Benchmark, Column, Sample, register_benchmark
from mqt_llava.eval.report import table
from mqt_llava.eval.runner import EngineActor, PairResult, Sweep, sample_rows
from mqt_llava.eval.spec import EvalSpec
from mqt_llava.inference import ENGINES, Completion, InferenceEngine, Request, register_engine
from mqt_llava.model.builder import build_model
from mqt_llava.model.connectors import CONNECTORS, Connector, ConnectorOptions, register_connector
from mqt_llava.model.export import save_export, visual_token_range
from mqt_llava.model.spec import ModelSpec
from small_model import small_spec

COMMON = dict(
    name="x",
    stage1={"config": "s1.yaml"},
    stage2={"config": "s2.yaml"},
    eval={"data_root": "bench", "benchmarks": ["pope"]},
)


class WordCount(Benchmark):
    """How many words follow the colon: a benchmark with one file, `questions.json` ([[text, count]])."""

    name = "word_count"
    title = "Words"
    metric = "exact"
    columns = (Column("exact", "Words", order=4.5),)  # between GQA (4) and POPE (5)
    defaults = {"questions": "questions.json"}

    def samples(self) -> list[Sample]:
        rows = self.read_json("questions")
        return [Sample(str(i), f"How many words: {text}", None, count) for i, (text, count) in enumerate(rows)]

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        return {"exact": 100 * sum(predictions.get(s.key) == str(s.target) for s in samples) / len(samples)}


class CountingEngine:
    """An inference backend that counts the words after the question's colon (and says which budget
    it was asked at), never looking at a model."""

    def __init__(self, maximum: int) -> None:
        self.max_visual_tokens, self.min_visual_tokens, self.max_context = maximum, 1, 512
        self.budgets: list[int] = []

    @classmethod
    def from_export(cls, path, device="cpu", dtype=None) -> "CountingEngine":
        return cls(visual_token_range(path)[1])

    def prompt_tokens(self, request: Request, num_visual_tokens: int) -> int:
        return len(request.question.split()) + num_visual_tokens

    def complete(self, requests, num_visual_tokens, max_new_tokens=32, **sampling) -> list[Completion]:
        self.budgets.append(num_visual_tokens)
        counts = [str(len(r.question.split(":", 1)[1].split())) for r in requests]
        return [
            Completion(c, self.prompt_tokens(r, num_visual_tokens), 1, "stop")
            for c, r in zip(counts, requests, strict=True)
        ]

    def stream(self, request, num_visual_tokens, sampling, cancel=None):
        (completion,) = self.complete([request], num_visual_tokens)
        yield completion.text
        yield completion


@pytest.fixture
def toy_benchmark_and_backend():
    register_benchmark(WordCount)
    register_engine("counting", CountingEngine.from_export)
    yield
    del BENCHMARKS["word_count"], ENGINES["counting"]


def test_a_benchmark_and_a_backend_answer_through_the_evaluation_into_table_1(
    toy_benchmark_and_backend, built, tmp_path
):
    """The toy benchmark is accepted by `benchmarks:`, asked by the toy backend through the sweep's
    engine actor (the actor Ray Data runs), scored, and shown in Table 1 in its declared column."""
    save_export(built, tmp_path / "export")
    (tmp_path / "bench" / "word_count").mkdir(parents=True)
    rows = [["red square", 2], ["a big blue circle", 4], ["one", 1]]
    (tmp_path / "bench" / "word_count" / "questions.json").write_text(json.dumps(rows))
    spec = EvalSpec(
        model=str(tmp_path / "export"),
        out=str(tmp_path / "eval"),
        data_root=str(tmp_path / "bench"),
        benchmarks=["word_count"],
        budgets="2,M",
        engine="counting",
    )
    sweep = Sweep(spec.sweep_config(), log=lambda _: None)
    results = []
    for m in sweep.config.budgets:
        actor = EngineActor(spec.model, m, use_gpu=False, torch_threads=None, engine=spec.engine)
        assert isinstance(actor.engine, CountingEngine)
        batch = {
            k: np.array([r[k] for r in sample_rows(sweep.benchmarks["word_count"], sweep.samples["word_count"])])
            for k in ("benchmark", "key", "prompt", "image_path", "image_bytes", "max_new_tokens")
        }
        answered = actor(batch)
        assert actor.engine.budgets == [m]
        rows_out = [
            {"key": k, "prediction": p, "error": e}
            for k, p, e in zip(answered["key"], answered["prediction"], answered["error"], strict=True)
        ]
        sweep.finish_pair("word_count", m, rows_out)
        results.append(sweep.score("word_count", m))
    assert [(r.budget, r.scores["exact"]) for r in results] == [(2, 100.0), (8, 100.0)]
    results += [PairResult("gqa", m, "scored", {"accuracy": 50.0}, 3) for m in (2, 8)]
    results += [PairResult("pope", m, "scored", {"f1": 70.0}, 3) for m in (2, 8)]
    lines = table(results).splitlines()
    assert lines[0].startswith("| # tokens | GQA | Words | POPE |")
    # Its cell (with the sweep's bootstrap interval), and the average counting the new column
    assert lines[2] == "| 2 | 50.0 | 100.0 [100.0, 100.0] | 70.0 | 73.3 |"


class ShuffleOptions(ConnectorOptions):
    kind: Literal["toy-shuffle"] = "toy-shuffle"
    tokens: int = Field(6, ge=2)

    def max_tokens(self, grid_positions: int) -> int:
        return self.tokens


class ShuffleConnector(Connector):
    """The first `tokens` grid features, projected: the smallest thing that is a connector."""

    options_class = ShuffleOptions

    def __init__(self, tokens: int, vision_width: int, llm_width: int) -> None:
        super().__init__()
        self.tokens, self.proj = tokens, nn.Linear(vision_width, llm_width)

    @classmethod
    def from_options(cls, options, vision_width, llm_width, grid_positions):
        return cls(options.tokens, vision_width, llm_width)

    @property
    def max_tokens(self) -> int:
        return self.tokens

    def forward(self, grid_features, num_tokens=None):
        return self.proj(grid_features[:, : self.tokens if num_tokens is None else num_tokens])

    def init_weights(self) -> None:
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)


def test_a_connector_kind_builds_from_the_model_yaml_and_runs_a_forward_at_several_budgets():
    from PIL import Image

    register_connector(ShuffleConnector)
    try:
        torch.manual_seed(0)
        declared = small_spec().model_dump() | {"connector": {"kind": "toy-shuffle", "tokens": 6}}  # as in a YAML
        built = build_model(ModelSpec(**declared))
        assert isinstance(built.model.connector, ShuffleConnector) and built.model.max_visual_tokens == 6
        engine = InferenceEngine.from_built(built)
        request = Request("What is it?", Image.new("RGB", (40, 30), (200, 30, 30)))
        lengths = {m: engine.forward([request], m).shape[1] for m in (1, 3, 6)}
        text = engine.prompt_tokens(request, 0)
        assert lengths == {1: text + 1, 3: text + 3, 6: text + 6}  # m visual tokens in the LLM's input
        with pytest.raises(ValueError, match="7"):
            engine.forward([request], 7)
    finally:
        del CONNECTORS["toy-shuffle"]


def test_an_ablation_axis_expands_into_variants_with_its_overrides():
    register_axis("weight_decay", Axis(Literal[0.0, 0.1], 0.0, {"stage2": ("weight_decay",)}, lambda v: f"wd{v}"))
    try:
        spec = AblationSpec(**COMMON, axes={"weight_decay": [0.0, 0.1], "schedule": ["linear"]})
        labels = [v.label(spec.baseline) for v in spec.variants()]
        assert labels == ["baseline/seed0", "wd0.1/seed0"]
        decayed = spec.variant("wd0.1/seed0")
        assert decayed.weight_decay == 0.1 and "weight_decay=0.1" in decayed.overrides("stage2")
        assert stage1_key(decayed, spec) == stage1_key(spec.baseline, spec)  # stage 2 only: stage 1 shared
        with pytest.raises(ValueError, match="weight_decay"):
            AblationSpec(**COMMON, axes={"weight_decay": [0.5]})
    finally:
        del AXES["weight_decay"]
    with pytest.raises(ValueError, match="unknown axis"):
        AblationSpec(**COMMON, axes={"weight_decay": [0.1]})


def test_a_tune_distribution_and_scheduler_are_built_from_the_yaml(tmp_path):
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.sample import Categorical

    @search.register_distribution
    class PowersOfTwo(search.Distribution):
        name = "powers_of_two"
        low: int = Field(ge=0)
        high: int

        def domain(self):
            from ray import tune

            return tune.choice([2**k for k in range(self.low, self.high + 1)])

    @search.register_scheduler
    class FirstInFirstOut(search.SchedulerSpec):
        kind: Literal["fifo"] = "fifo"

        def build(self):
            return FIFOScheduler()

    try:
        declared = COMMON | {
            "search": {"stage2.global_batch_size": {"powers_of_two": [3, 5]}},
            "num_samples": 2,
            "scheduler": {"kind": "fifo", "metric": "loss", "mode": "min"},
        }
        path = tmp_path / "ablation.yaml"
        path.write_text(yaml.safe_dump(declared))
        spec = load_config(AblationSpec, str(path), [])
        domain = spec.param_space()["search"]["stage2.global_batch_size"]
        assert isinstance(domain, Categorical) and domain.categories == [8, 16, 32]
        assert isinstance(spec.trial_scheduler(), FIFOScheduler)
        assert (
            spec.trial_variant({"variant": "baseline/seed0", "search": {"stage2.global_batch_size": 16}}).overrides(
                "stage2"
            )[-1]
            == "global_batch_size=16"
        )
    finally:
        del search.DISTRIBUTIONS["powers_of_two"], search.SCHEDULERS["fifo"]
    with pytest.raises(ValueError, match="unknown distribution 'powers_of_two'"):
        load_config(AblationSpec, str(path), [])
    with pytest.raises(ValueError, match="unknown kind 'fifo'"):
        AblationSpec(**declared | {"search": {}, "num_samples": 1})
