"""Held-out questions about the toy corpus's evaluation scenes, answered per question and judged with
the controls that would expose a model that does not look:

- **majority by kind**: each kind's most common answer among these questions, given without looking
  (the best a model of answer priors alone can do on them);
- **blank image**: the same model, the same questions, the image replaced by an empty canvas of the
  same size. A model that does not beat its own blank-image control is not using the image.

Every answer is kept (`Answers`: one record per question), so any two runs on the same questions can
be compared question by question (`mqt_llava.eval.stats.paired_difference`), and intervals resample
whole scenes, since questions about one scene are not independent.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from PIL import Image

from mqt_llava.eval import stats
from mqt_llava.explain import Focus, attends_to_grid, attention_focus
from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.output import Progress
from mqt_llava.toy.corpus import EVAL_SCENES
from mqt_llava.toy.world import BACKGROUND, FINE_KINDS, KINDS, Scene, ask, prompt, record_rng

CONTROLS = ("image", "blank")  # what the model is shown


@dataclass(frozen=True)
class Question:
    scene: int  # the held-out scene's index: the resampling group
    kind: str
    text: str
    answer: str
    image_path: str


def heldout_questions(corpus: str | Path, limit: int | None = None, seed: int = 0) -> list[Question]:
    """One question of each kind per held-out scene, in scene order (position is the only kind a
    scene can fail to pose, when no object is unique by name)."""
    corpus = Path(corpus)
    questions = []
    for index, line in enumerate((corpus / EVAL_SCENES).read_text().splitlines()[:limit]):
        record = json.loads(line)
        scene = Scene.from_dict(record["scene"])
        rng = record_rng(seed, "heldout-questions", index)
        for kind in KINDS:
            qa = ask(scene, kind, rng)
            if qa is not None:
                questions.append(Question(index, kind, prompt(qa), qa.answer, str(corpus / record["image"])))
    return questions


def normalise(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


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

    def select(self, kind: str | None) -> tuple[list[float], list[int]]:
        """Per-question scores and scene groups, for one kind (None: all)."""
        pairs = [(c, q.scene) for c, q in zip(self.correct, self.questions, strict=True) if kind in (None, q.kind)]
        return [c for c, _ in pairs], [g for _, g in pairs]

    def intervals(self, seed: int = 0) -> dict[str, stats.Interval]:
        """Accuracy with a 95 % scene-bootstrap interval, per kind and over all ("all")."""
        out = {}
        for kind in [*KINDS, None]:
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


def majority_answers(questions: list[Question]) -> Answers:
    """The answer-prior control: each kind's most common answer among these questions, for every
    question of that kind (an upper bound on what answering without looking can score here)."""
    top = {
        kind: Counter(q.answer for q in questions if q.kind == kind).most_common(1)[0][0]
        for kind in {q.kind for q in questions}
    }
    return Answers(questions, [top[q.kind] for q in questions])


def blank_like(image: Image.Image) -> Image.Image:
    """The blank-image control's input: an empty canvas of the image's size and background."""
    return Image.new("RGB", image.size, BACKGROUND)


def answer(
    engine: InferenceEngine,
    questions: list[Question],
    m: int,
    control: str = "image",
    batch_size: int = 16,
    log=print,
) -> Answers:
    """Greedy short answers at m visual tokens, with the image (`control="image"`) or a blank one."""
    if control not in CONTROLS:
        raise ValueError(f"control: {control!r} is not one of {CONTROLS}")
    predictions: list[str] = []
    progress = Progress(len(questions), every_s=15)
    for i in range(0, len(questions), batch_size):
        chunk = questions[i : i + batch_size]
        images = [Image.open(q.image_path).convert("RGB") for q in chunk]
        if control == "blank":
            images = [blank_like(image) for image in images]
        requests = [Request(q.text, image) for q, image in zip(chunk, images, strict=True)]
        predictions += engine.generate(requests, m, max_new_tokens=8)
        if progress.update(len(predictions)):
            log(
                f"[held-out m={m} {control}] {len(predictions)}/{len(questions)} questions, {progress.speed()}, "
                f"{progress.eta}"
            )
    return Answers(questions, predictions)


def evaluate(
    engine: InferenceEngine,
    questions: list[Question],
    budgets: list[int],
    out: Path,
    blank_at: list[int] | None = None,
    log=print,
) -> dict[str, Answers]:
    """Answers at every budget with the image, and with a blank image at `blank_at` (default: the
    largest budget), each saved as `out/m{m}-{control}.jsonl` (one record per question) and read
    back instead of asked again on a rerun; plus the majority control.
    Keys: "m=2/image", ..., "m=32/blank", "majority"."""
    runs = {"majority": majority_answers(questions)}
    wanted = [(m, "image") for m in budgets] + [(m, "blank") for m in (max(budgets),) if blank_at is None]
    wanted += [(m, "blank") for m in blank_at or []]
    for m, control in wanted:
        path = out / f"m{m}-{control}.jsonl"
        if path.exists() and (saved := Answers.load(path)).questions == questions:
            runs[f"m={m}/{control}"] = saved
            continue
        runs[f"m={m}/{control}"] = result = answer(engine, questions, m, control, log=log)
        result.save(path)
    return runs


def focus(engine: InferenceEngine, questions: list[Question], budgets: list[int], scenes: int = 64) -> dict[int, Focus]:
    """How the visual tokens share the image (explain.Focus) at each budget, over the images of the
    first `scenes` scenes the questions ask about; empty for a connector that does not attend to the
    grid (nothing to measure)."""
    if not attends_to_grid(engine.model.connector):
        return {}
    paths = list(dict.fromkeys(q.image_path for q in questions))[:scenes]
    images = [Image.open(path).convert("RGB") for path in paths]
    return attention_focus(engine, images, budgets)


def table(runs: dict[str, Answers]) -> str:
    """Accuracy (%) per kind with the overall 95 % interval, one row per run, as Markdown."""
    header = ["", *KINDS, "all (95 % interval)"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for label, run in runs.items():
        intervals = run.intervals()
        cells = [f"{100 * intervals[k].estimate:.1f}" if k in intervals else "" for k in KINDS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {intervals['all'].points()} |")
    return "\n".join(lines) + "\n"


PILOT_GATES = {  # issue 15's pilot: what the baseline must reach at m = M before a grid is worth running
    "existence at M": 0.75,
    "position at M": 0.30,
    "all at M above the stronger no-image control": 0.15,
    "fine-grained kinds' mean gain from the smallest budget to M": 0.10,
}


def pilot_gates(runs: dict[str, Answers], budgets: list[int]) -> list[tuple[str, float, float, bool]]:
    """(gate, figure, threshold, passed) for each of PILOT_GATES, from `evaluate`'s runs."""
    low, top = min(budgets), max(budgets)
    at_top, at_low = runs[f"m={top}/image"].intervals(), runs[f"m={low}/image"].intervals()
    controls = [runs["majority"].intervals()["all"].estimate]
    if f"m={top}/blank" in runs:
        controls.append(runs[f"m={top}/blank"].intervals()["all"].estimate)
    gains = [at_top[k].estimate - at_low[k].estimate for k in FINE_KINDS if k in at_top and k in at_low]
    figures = [
        at_top["existence"].estimate,
        at_top["position"].estimate,
        at_top["all"].estimate - max(controls),
        sum(gains) / len(gains) if gains else float("nan"),
    ]
    return [
        (name, figure, threshold, figure >= threshold)
        for (name, threshold), figure in zip(PILOT_GATES.items(), figures, strict=True)
    ]


def uses_image(runs: dict[str, Answers], m: int) -> stats.Verdict:
    """Does the model at m beat its own blank-image control on the same questions?"""
    comparison = stats.paired_difference(
        runs[f"m={m}/image"].correct, runs[f"m={m}/blank"].correct, [q.scene for q in runs[f"m={m}/image"].questions]
    )
    return stats.direction(comparison, expected=1)
