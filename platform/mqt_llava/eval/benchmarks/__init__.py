"""The benchmark adapters, by the name `jobs/evaluate.py --benchmarks` takes, and the report's
Table 1 columns they declare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mqt_llava.eval.benchmarks.base import Benchmark, Column, Sample, Skipped
from mqt_llava.eval.benchmarks.gqa import GQA
from mqt_llava.eval.benchmarks.judged import LlavaBench, MMVet
from mqt_llava.eval.benchmarks.mmbench import MMBench
from mqt_llava.eval.benchmarks.mme import MME
from mqt_llava.eval.benchmarks.mmmu import MMMU
from mqt_llava.eval.benchmarks.pope import POPE
from mqt_llava.eval.benchmarks.scienceqa import ScienceQA
from mqt_llava.eval.benchmarks.vqa import TextVQA, VizWiz, VQAv2

BENCHMARKS: dict[str, type[Benchmark]] = {}

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Column",
    "Sample",
    "Skipped",
    "make_benchmark",
    "register_benchmark",
    "table_columns",
]


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    """Makes `cls` known by its `name` (to `benchmarks:`, the sweep and the report, which reads its
    `columns`); usable as a class decorator."""
    if cls.name in BENCHMARKS and BENCHMARKS[cls.name] is not cls:
        raise ValueError(f"benchmark {cls.name!r} is registered already (by {BENCHMARKS[cls.name].__qualname__})")
    BENCHMARKS[cls.name] = cls
    return cls


BUILT_IN = (VQAv2, GQA, VizWiz, TextVQA, MME, POPE, ScienceQA, MMBench, MMMU, LlavaBench, MMVet)
for benchmark in BUILT_IN:
    register_benchmark(benchmark)


def table_columns() -> list[tuple[str, Column]]:
    """Table 1's columns, (benchmark name, column), in their declared order (ties: registration order)."""
    declared = [(name, column) for name, cls in BENCHMARKS.items() for column in cls.columns]
    return sorted(declared, key=lambda pair: pair[1].order)


def make_benchmark(name: str, data_root: str | Path, options: dict[str, Any] | None = None) -> Benchmark:
    """`name`'s adapter over `data_root/name/`."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name](Path(data_root) / name, dict(options or {}))
