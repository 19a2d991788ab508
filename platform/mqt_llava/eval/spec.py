"""The evaluation spec: one YAML (`<preset>/evaluate.yaml`, or any file) for a budget sweep, used
alike by jobs/evaluate.py, the ablation trials (`eval:` in the ablation spec) and the quickstart.
`EvalSpec.sweep_config()` resolves it against its export into the SweepConfig a Sweep runs: the spec
itself, with what resolving adds (absolute paths, the budgets as numbers, the judge)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mqt_llava.config import Spec
from mqt_llava.eval.benchmarks import BENCHMARKS
from mqt_llava.eval.judge import Judge
from mqt_llava.model.budgets import default_budgets, parse_budgets
from mqt_llava.model.export import check_export, visual_token_range
from mqt_llava.tracking import TrackingSpec


class JudgeSpec(Spec):
    """A judge model behind an OpenAI-compatible API, for LLaVA-Bench and MM-Vet (skipped without one)."""

    url: str | None = Field(None, description="the API base, e.g. https://api.openai.com/v1")
    model: str | None = None
    key_env: str = Field("OPENAI_API_KEY", description="the environment variable holding the API key")


class EvalSpec(Spec):
    model: str | None = Field(None, description="an export directory (jobs/stage2.py writes <run>/export)")
    out: str | None = Field(None, description="predictions, scores, report; default runs/eval/<the export's run>")
    data_root: str = Field("playground/data/eval", description="one directory per benchmark (LLaVA-1.5's layout)")
    benchmarks: list[str] | Literal["all"] = "all"
    budgets: str | None = Field(None, description="e.g. '2,8,M' (M: the model's maximum); default: the paper's")
    options: dict[str, dict[str, Any]] = Field({}, description="per benchmark, e.g. {pope: {splits: [random]}}")
    limit: int | None = Field(None, ge=1, description="about N samples of each benchmark, a seeded random draw")
    batch_size: int = Field(8, ge=1)
    actors: int = Field(1, ge=1, description="inference-engine actors")
    actor_cpus: float = Field(1.0, gt=0)
    use_gpu: bool = Field(False, description="one GPU per actor, bf16")
    torch_threads: int | None = Field(None, ge=1)
    engine: str = Field("hf", description="the inference backend (mqt_llava.inference.ENGINES)")
    judge: JudgeSpec = JudgeSpec()
    advisor_points: float = Field(1.0, ge=0, description="the budget advisor's tolerance, in points")
    blank_control: bool = Field(
        False,
        description="also answer at the largest budget with every image blanked "
        "(its mean colour): does the model use the image? (controls.md)",
    )
    tracking: TrackingSpec = TrackingSpec()

    @model_validator(mode="after")
    def _known(self):
        unknown = [n for n in self.benchmark_names + list(self.options) if n not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")
        return self

    @property
    def benchmark_names(self) -> list[str]:
        return list(BENCHMARKS) if self.benchmarks == "all" else list(self.benchmarks)

    def sweep_config(self) -> SweepConfig:
        """Resolved against the export: its budget range checks the budgets; paths made absolute."""
        if self.model is None:
            raise ValueError("model: no export given (set model=<run>/export)")
        export = check_export(self.model, "model").resolve()
        low, high = visual_token_range(export)
        budgets = parse_budgets(self.budgets, high, minimum=low) if self.budgets else default_budgets(high, minimum=low)
        out = Path(self.out) if self.out else Path("runs/eval") / export.parent.name
        resolved = self.model_copy(
            update={
                "model": str(export),
                "out": str(out.resolve()),
                "data_root": str(Path(self.data_root).expanduser().resolve()),
            }
        )
        judge = Judge.from_options(self.judge.url, self.judge.model, self.judge.key_env)
        return SweepConfig(resolved, budgets, judge)


@dataclass(frozen=True)
class SweepConfig:
    """What a Sweep runs: an EvalSpec resolved against its export (`spec.model`, `spec.out` and
    `spec.data_root` absolute, `spec.out` set), with the budgets as numbers and the judge, when one
    is configured. Every other setting is read from `spec`; made by `EvalSpec.sweep_config()`."""

    spec: EvalSpec
    budgets: list[int]
    judge: Judge | None = None

    @property
    def out(self) -> Path:
        return Path(self.spec.out)
