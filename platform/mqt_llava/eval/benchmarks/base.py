"""What every benchmark adapter provides: its samples (prompt + image + what scoring needs) read
from the benchmark's official local files, and its official scoring.

Files sit where LLaVA-1.5's evaluation guide puts them (`playground/data/eval/<benchmark>/`); the
root is the evaluation spec's `data_root`, and each adapter's file names can be overridden
(`options: {name: {key: value}}`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mqt_llava.data.conversation import OPTION_SUFFIX, SHORT_ANSWER

__all__ = ["OPTION_SUFFIX", "SHORT_ANSWER", "Benchmark", "BenchmarkFilesMissing", "Column", "Sample", "Skipped"]


class BenchmarkFilesMissing(FileNotFoundError):
    pass


class Skipped(Exception):
    """A benchmark that cannot be scored here (no judge configured): reported with this reason,
    never with a number."""


@dataclass(frozen=True)
class Sample:
    key: str  # unique within the benchmark
    prompt: str  # the user turn, without the image placeholder (the engine's template adds it)
    image: str | bytes | None  # a file path, encoded image bytes, or None for a text-only question
    target: Any = None  # what scoring needs (answers, label, choices): JSON-serialisable
    group: str = ""  # split / subtask / category, for per-group scores
    unit: str = ""  # samples scored together (MME's two questions of an image): kept together by --limit


@dataclass(frozen=True)
class Column:
    """A column a benchmark fills in the report's Table 1: the score it shows (`metric`, a key of
    `score`'s result), its heading, its place among the columns (`order`, ascending: the paper's
    left to right is 1..11) and the score's maximum, by which the normalised average divides it."""

    metric: str
    title: str
    order: float
    scale: float = 100.0


@dataclass
class Benchmark:
    """One benchmark's files under `root`; subclasses set the class attributes and implement
    `samples` and `score`."""

    root: Path
    options: dict[str, Any] = field(default_factory=dict)

    name: ClassVar[str]
    title: ClassVar[str]  # the column heading in Table 1
    metric: ClassVar[str]  # the key of `score`'s headline number
    scale: ClassVar[float] = 100.0  # the headline's maximum (MME's perception score: 2000)
    max_new_tokens: ClassVar[int] = 16
    needs_judge: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}
    # Its column(s) in Table 1 (MME has two); none: a table of its own below it (TextVQA).
    columns: ClassVar[tuple[Column, ...]] = ()

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        unknown = set(self.options) - set(self.defaults)
        if unknown:
            raise ValueError(f"{self.name}: unknown option(s) {sorted(unknown)}; known: {sorted(self.defaults)}")
        self.options = {**self.defaults, **self.options}

    def path(self, option: str) -> Path:
        """The file an option names, which must exist."""
        return self.existing(str(self.options[option]), option)

    def existing(self, relative: str, option: str) -> Path:
        path = self.root / relative
        if not path.exists():
            raise BenchmarkFilesMissing(
                f"{self.name}: {path} not found (option {self.name}.{option}; "
                f"expected LLaVA-1.5's layout under --data-root/{self.root.name})"
            )
        return path

    def read_json(self, option: str) -> Any:
        path = self.path(option)
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.name}: {path} is not valid JSON: {exc}") from None

    def read_jsonl(self, option: str) -> list[dict]:
        return read_jsonl(self.path(option))

    def samples(self) -> list[Sample]:
        raise NotImplementedError

    def score(self, samples: list[Sample], predictions: dict[str, str], judge=None) -> dict[str, float]:
        """Official metrics; `predictions` maps sample keys to answers (missing = unanswered)."""
        raise NotImplementedError

    def submission(self, samples: list[Sample], predictions: dict[str, str]) -> dict[str, Any]:
        """The files an evaluation server takes, exactly as LLaVA-1.5's converters write them (file
        name -> JSON-serialisable content, or bytes written as they are); empty where none is."""
        return {}

    @property
    def server_scored(self) -> bool:
        """True when, as configured, only the benchmark's evaluation server can give the paper's
        number (a test split without public answers): the sweep writes the upload file and reports
        no local number."""
        return False

    @property
    def column_title(self) -> str:
        """The heading of this benchmark's column. A split or scorer other than the paper's (a
        locally scored val split) gets a heading of its own, so its number is never read as the
        paper's."""
        return self.title


def accuracy_by_group(samples: list[Sample], hit: dict[str, float]) -> dict[str, float]:
    """Percent accuracy overall and per sample group, from each sample's score (0..1) by key."""
    scores = {"accuracy": 100 * mean(hit.values())}
    for group in sorted({s.group for s in samples if s.group}):
        scores[f"accuracy/{group}"] = 100 * mean(hit[s.key] for s in samples if s.group == group)
    return scores


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not valid JSON: {exc}") from None
    return rows
