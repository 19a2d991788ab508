"""Held-out questions grouped by kind, answered per question at several budgets and judged beside
the controls that would expose a model that does not look:

- **answer prior** (`majority_answers`): each kind's most common answer among these questions,
  given without looking (the best a model of answer priors alone can do on them);
- **blank image**: the same model, the same questions, each image replaced by a blank one of the
  same size (`QuestionSet.blank`). A model that does not beat its own blank-image control is not
  using the image (`uses_image`, a paired test).

Every answer is kept (`Answers`: one record per question), so any two runs on the same questions can
be compared question by question (`mqt_llava.eval.stats.paired_difference`), and intervals resample
whole images, since questions about one image are not independent.

The questions come from a `QuestionSet`: a world's kinds (in the order tables show them), its
question maker, its blank image and its gates (figures a baseline must reach). A set is named by
its import path, `package.module:attribute` (`load_question_set`), so a spec can name one and any
process (a Ray worker included) can load it; the toy world's is `mqt_llava.toy.heldout:QUESTIONS`.
Any registered inference backend answers (`mqt_llava.inference.load_engine`).
"""

from __future__ import annotations

import json
import pkgutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from mqt_llava.eval import stats
from mqt_llava.eval.runner import blank_like
from mqt_llava.explain import Focus, attends_to_grid, attention_focus
from mqt_llava.inference import Engine, Request
from mqt_llava.output import Progress

MAX_NEW_TOKENS = 8  # short answers: a word or a number


@dataclass(frozen=True)
class Question:
    scene: int  # the image (scene) it asks about: the resampling group
    kind: str
    text: str
    answer: str
    image_path: str


def normalise(text: str) -> str:
    """What exact match compares: no surrounding space, no final full stop, lower case."""
    return text.strip().rstrip(".").strip().lower()


def kinds_of(questions: Sequence[Question]) -> tuple[str, ...]:
    """The questions' kinds in the order they first appear."""
    return tuple(dict.fromkeys(q.kind for q in questions))


@dataclass
class Answers:
    """One run's answers to a list of questions: `predictions[i]` answers `questions[i]`."""

    questions: list[Question]
    predictions: list[str]

    @cached_property
    def correct(self) -> list[float]:
        """1/0 per question (computed once: intervals and claims select from it by kind many times)."""
        pairs = zip(self.questions, self.predictions, strict=True)
        return [float(normalise(p) == normalise(q.answer)) for q, p in pairs]

    @property
    def scenes(self) -> list[int]:
        """Each question's resampling group."""
        return [q.scene for q in self.questions]

    def select(self, kind: str | None) -> tuple[list[float], list[int]]:
        """Per-question scores and scene groups, for one kind (None: all)."""
        pairs = [(c, q.scene) for c, q in zip(self.correct, self.questions, strict=True) if kind in (None, q.kind)]
        return [c for c, _ in pairs], [g for _, g in pairs]

    def intervals(self, kinds: Sequence[str] | None = None, seed: int = 0) -> dict[str, stats.Interval]:
        """Accuracy with a 95 % scene-bootstrap interval per kind (in `kinds`' order; default: as the
        kinds first appear among the questions; a kind without questions is left out) and over all
        questions ("all")."""
        out = {}
        for kind in [*(kinds_of(self.questions) if kinds is None else kinds), None]:
            scores, groups = self.select(kind)
            if scores:
                out[kind or "all"] = stats.accuracy_interval(scores, groups, seed=seed)
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        rows = [
            asdict(q) | {"prediction": p, "correct": c}
            for q, p, c in zip(self.questions, self.predictions, self.correct, strict=True)
        ]
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Answers:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        fields = Question.__dataclass_fields__
        return cls([Question(**{k: r[k] for k in fields}) for r in rows], [r["prediction"] for r in rows])


Runs = dict[str, Answers]  # "majority", "m=2/image", ..., "m=32/blank" (evaluate's keys)
Blank = Callable[[Image.Image], Image.Image]


class Gate(NamedTuple):
    """One gate's outcome: a figure from the runs against the threshold it must reach."""

    name: str
    figure: float
    threshold: float
    passed: bool


def no_gates(runs: Runs, budgets: list[int]) -> list[Gate]:
    return []


@dataclass(frozen=True)
class QuestionSet:
    """What a world supplies to the held-out evaluation.

    `questions(source, limit)`: the questions about the world's held-out images at `source` (a
    corpus directory), in a fixed order (kept answers are read back only for equal questions);
    `limit`: the first that many images. `kinds`: every kind, in the order tables show them;
    `fine_kinds`: those that need the image's detail (the rest ask about the whole image).
    `blank`: the blank-image control's image for a given one (default: its mean colour).
    `gates(runs, budgets)`: what a baseline must reach, from `evaluate`'s runs (default: none)."""

    name: str
    kinds: tuple[str, ...]
    questions: Callable[[Path, int | None], list[Question]]
    fine_kinds: tuple[str, ...] = ()
    blank: Blank = blank_like
    gates: Callable[[Runs, list[int]], list[Gate]] = no_gates

    def __post_init__(self):
        unknown = [k for k in self.fine_kinds if k not in self.kinds]
        if unknown:
            raise ValueError(f"question set {self.name}: fine kinds {unknown} are not among its kinds {self.kinds}")

    @property
    def coarse_kinds(self) -> tuple[str, ...]:
        return tuple(k for k in self.kinds if k not in self.fine_kinds)


def load_question_set(reference: str) -> QuestionSet:
    """The QuestionSet at `package.module:attribute` (imported on first use)."""
    if ":" not in reference:
        raise ValueError(f"question set {reference!r}: name it as package.module:attribute")
    try:
        found = pkgutil.resolve_name(reference)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"question set {reference!r} cannot be loaded: {exc}") from exc
    if not isinstance(found, QuestionSet):
        raise ValueError(f"question set {reference!r} is a {type(found).__name__}, not a QuestionSet")
    return found


def majority_answers(questions: list[Question]) -> Answers:
    """The answer-prior control: each kind's most common answer among these questions, for every
    question of that kind (an upper bound on what answering without looking can score here)."""
    top = {
        kind: Counter(q.answer for q in questions if q.kind == kind).most_common(1)[0][0]
        for kind in {q.kind for q in questions}
    }
    return Answers(questions, [top[q.kind] for q in questions])


def answer(
    engine: Engine,
    questions: list[Question],
    m: int,
    blank: Blank | None = None,
    batch_size: int = 16,
    log=print,
) -> Answers:
    """Greedy short answers at m visual tokens, with each question's image, or with `blank(image)`
    in its place (the blank-image control)."""
    control = "image" if blank is None else "blank"
    predictions: list[str] = []
    progress = Progress(len(questions), every_s=15)
    for i in range(0, len(questions), batch_size):
        chunk = questions[i : i + batch_size]
        images = [Image.open(q.image_path).convert("RGB") for q in chunk]
        if blank is not None:
            images = [blank(image) for image in images]
        requests = [Request(q.text, image) for q, image in zip(chunk, images, strict=True)]
        predictions += [c.text for c in engine.complete(requests, m, max_new_tokens=MAX_NEW_TOKENS)]
        if progress.update(len(predictions)):
            log(
                f"[held-out m={m} {control}] {len(predictions)}/{len(questions)} questions, {progress.speed()}, "
                f"{progress.eta}"
            )
    return Answers(questions, predictions)


def evaluate(
    engine: Engine,
    questions: list[Question],
    budgets: list[int],
    out: Path,
    blank: Blank = blank_like,
    blank_at: list[int] | None = None,
    log=print,
) -> Runs:
    """Answers at every budget with the image, and with a blank image (`blank`) at `blank_at`
    (default: the largest budget), each saved as `out/m{m}-{control}.jsonl` (one record per
    question) and read back instead of asked again on a rerun; plus the answer-prior control.
    Keys: "m=2/image", ..., "m=32/blank", "majority"."""
    runs = {"majority": majority_answers(questions)}
    wanted = [(m, "image") for m in budgets] + [(m, "blank") for m in (max(budgets),) if blank_at is None]
    wanted += [(m, "blank") for m in blank_at or []]
    for m, control in wanted:
        path = out / f"m{m}-{control}.jsonl"
        if path.exists() and (saved := Answers.load(path)).questions == questions:
            runs[f"m={m}/{control}"] = saved
            continue
        result = answer(engine, questions, m, blank if control == "blank" else None, log=log)
        runs[f"m={m}/{control}"] = result
        result.save(path)
    return runs


def focus(engine: Engine, questions: list[Question], budgets: list[int], scenes: int = 64) -> dict[int, Focus]:
    """How the visual tokens share the image (explain.Focus) at each budget, over the images of the
    first `scenes` scenes the questions ask about; empty for a connector that does not attend to the
    grid, or a backend that does not expose its model (nothing to measure)."""
    model = getattr(engine, "model", None)
    if model is None or not attends_to_grid(model.connector):
        return {}
    paths = list(dict.fromkeys(q.image_path for q in questions))[:scenes]
    images = [Image.open(path).convert("RGB") for path in paths]
    return attention_focus(engine, images, budgets)


def table(runs: Runs, kinds: Sequence[str]) -> str:
    """Accuracy (%) per kind with the overall 95 % interval, one row per run, as Markdown."""
    header = ["", *kinds, "all (95 % interval)"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for label, run in runs.items():
        intervals = run.intervals(kinds)
        cells = [f"{100 * intervals[k].estimate:.1f}" if k in intervals else "" for k in kinds]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {intervals['all'].points()} |")
    return "\n".join(lines) + "\n"


def uses_image(runs: Runs, m: int) -> stats.Verdict:
    """Does the model at m beat its own blank-image control on the same questions?"""
    image, blank = runs[f"m={m}/image"], runs[f"m={m}/blank"]
    return stats.direction(stats.paired_difference(image.correct, blank.correct, image.scenes), expected=1)
