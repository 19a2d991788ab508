"""The benchmark adapters, by the name `jobs/evaluate.py --benchmarks` takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mqt_llava.eval.benchmarks.base import Benchmark, Sample, Skipped
from mqt_llava.eval.benchmarks.gqa import GQA
from mqt_llava.eval.benchmarks.judged import LlavaBench, MMVet
from mqt_llava.eval.benchmarks.mmbench import MMBench
from mqt_llava.eval.benchmarks.mme import MME
from mqt_llava.eval.benchmarks.mmmu import MMMU
from mqt_llava.eval.benchmarks.pope import POPE
from mqt_llava.eval.benchmarks.scienceqa import ScienceQA
from mqt_llava.eval.benchmarks.vqa import TextVQA, VizWiz, VQAv2

# Table 1's column order.
BENCHMARKS: dict[str, type[Benchmark]] = {
    b.name: b for b in (VQAv2, GQA, VizWiz, TextVQA, MME, POPE, ScienceQA, MMBench, MMMU, LlavaBench, MMVet)
}

__all__ = ["BENCHMARKS", "Benchmark", "Sample", "Skipped", "make_benchmark"]


def make_benchmark(name: str, data_root: str | Path, options: dict[str, Any] | None = None) -> Benchmark:
    """`name`'s adapter over `data_root/name/`."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name](Path(data_root) / name, dict(options or {}))
