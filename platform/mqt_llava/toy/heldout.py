"""Held-out short-answer questions about the synthetic corpus's evaluation scenes, scored by exact
match, next to the majority-answer baseline (the accuracy of always giving each kind's most common
answer: what a model that ignores the image can reach at best).

The questions are the training set's VQA turns (same generator, same short-answer suffix), asked of
scenes no training record used.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.output import Progress
from mqt_llava.toy.corpus import EVAL_SCENES
from mqt_llava.toy.world import COARSE_KINDS, FINE_KINDS, SHORT_ANSWER, Scene, ask, record_rng

KINDS = COARSE_KINDS + FINE_KINDS


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    answer: str
    image_path: Path


def heldout_questions(corpus: str | Path, limit: int | None = None, seed: int = 0) -> list[Question]:
    """One question of each kind per held-out scene (where the scene can pose it unambiguously)."""
    corpus = Path(corpus)
    questions = []
    for index, line in enumerate((corpus / EVAL_SCENES).read_text().splitlines()[:limit]):
        record = json.loads(line)
        scene = Scene.from_dict(record["scene"])
        rng = record_rng(seed, "heldout-questions", index)
        for kind in KINDS:
            qa = ask(scene, kind, rng)
            if qa is not None:
                questions.append(Question(kind, f"{qa.question}\n{SHORT_ANSWER}", qa.answer, corpus / record["image"]))
    return questions


def majority_baseline(questions: list[Question]) -> dict[str, float]:
    """Per kind and overall: the accuracy of answering each kind's most frequent answer."""
    scores: dict[str, float] = {}
    hits = 0
    for kind in KINDS:
        answers = [q.answer for q in questions if q.kind == kind]
        if answers:
            top = Counter(answers).most_common(1)[0][1]
            scores[kind] = top / len(answers)
            hits += top
    scores["all"] = hits / max(len(questions), 1)
    return scores


def normalise(text: str) -> str:
    return text.strip().rstrip(".").strip().lower()


def exact_match(
    engine: InferenceEngine, questions: list[Question], m: int, batch_size: int = 16, log=print
) -> dict[str, float]:
    """Greedy answers at m visual tokens; per-kind and overall accuracy (case and a final period
    ignored)."""
    correct: Counter = Counter()
    total: Counter = Counter()
    progress = Progress(len(questions), every_s=15)
    for i in range(0, len(questions), batch_size):
        chunk = questions[i : i + batch_size]
        requests = [Request(q.text, Image.open(q.image_path).convert("RGB")) for q in chunk]
        for q, answer in zip(chunk, engine.generate(requests, m, max_new_tokens=8), strict=True):
            total[q.kind] += 1
            correct[q.kind] += normalise(answer) == normalise(q.answer)
        done = i + len(chunk)
        if progress.update(done):
            log(f"[eval m={m}] {done}/{len(questions)} questions, {progress.speed()}, {progress.eta}")
    scores = {kind: correct[kind] / total[kind] for kind in KINDS if total[kind]}
    scores["all"] = sum(correct.values()) / max(sum(total.values()), 1)
    return scores
