"""The toy world's held-out questions, for the generic held-out evaluation (mqt_llava.eval.heldout):
one question of each kind per evaluation scene of a corpus, its blank image (an empty scene) and its
pilot gates. Specs name it as `mqt_llava.toy.heldout:QUESTIONS`."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mqt_llava.eval.heldout import Gate, Question, QuestionSet, Runs
from mqt_llava.toy.corpus import EVAL_SCENES
from mqt_llava.toy.world import BACKGROUND, FINE_KINDS, KINDS, Scene, ask, prompt, record_rng


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


def empty_scene(image: Image.Image) -> Image.Image:
    """The blank-image control's input: a scene of the image's size with nothing on its background."""
    return Image.new("RGB", image.size, BACKGROUND)


PILOT_GATES = {  # issue 15's pilot: what the baseline must reach at m = M before a grid is worth running
    "existence at M": 0.75,
    "position at M": 0.30,
    "all at M above the stronger no-image control": 0.15,
    "fine-grained kinds' mean gain from the smallest budget to M": 0.10,
}


def pilot_gates(runs: Runs, budgets: list[int]) -> list[Gate]:
    """Each of PILOT_GATES, from mqt_llava.eval.heldout.evaluate's runs."""
    low, top = min(budgets), max(budgets)
    at_top, at_low = runs[f"m={top}/image"].intervals(KINDS), runs[f"m={low}/image"].intervals(KINDS)
    controls = [runs["majority"].intervals(KINDS)["all"].estimate]
    if f"m={top}/blank" in runs:
        controls.append(runs[f"m={top}/blank"].intervals(KINDS)["all"].estimate)
    gains = [at_top[k].estimate - at_low[k].estimate for k in FINE_KINDS if k in at_top and k in at_low]
    figures = [
        at_top["existence"].estimate,
        at_top["position"].estimate,
        at_top["all"].estimate - max(controls),
        sum(gains) / len(gains) if gains else float("nan"),
    ]
    return [
        Gate(name, figure, threshold, figure >= threshold)
        for (name, threshold), figure in zip(PILOT_GATES.items(), figures, strict=True)
    ]


QUESTIONS = QuestionSet(
    name="toy",
    kinds=KINDS,
    questions=heldout_questions,
    fine_kinds=FINE_KINDS,
    blank=empty_scene,
    gates=pilot_gates,
)
QUESTIONS_REFERENCE = "mqt_llava.toy.heldout:QUESTIONS"  # how a spec names it (HeldoutRef.questions)
