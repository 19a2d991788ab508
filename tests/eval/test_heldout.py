"""Held-out questions with their controls, on a real (small, untrained) engine: one question of each
kind per scene, every answer kept and read back on a rerun, the majority and blank-image controls on
the same questions, the pilot gates computed from the kept answers."""

from collections import Counter

import pytest

from mqt_llava.inference import InferenceEngine
from mqt_llava.toy import heldout
from mqt_llava.toy.world import KINDS, YES_NO


@pytest.fixture
def corpus(heldout_corpus):
    return heldout_corpus


def test_one_question_of_each_kind_per_scene_in_the_benchmarks_wording(corpus):
    questions = heldout.heldout_questions(corpus)
    kinds = Counter(q.kind for q in questions)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 9
    assert [q.scene for q in questions] == sorted(q.scene for q in questions)
    assert all(YES_NO in q.text for q in questions if q.kind in ("existence", "occupancy"))
    assert heldout.heldout_questions(corpus) == questions  # a function of (corpus, seed)


def test_majority_control_answers_each_kinds_commonest_answer(corpus):
    questions = heldout.heldout_questions(corpus)
    control = heldout.majority_answers(questions)
    by_kind = {}
    for q, p in zip(questions, control.predictions, strict=True):
        by_kind.setdefault(q.kind, set()).add(p)
    assert all(len(answers) == 1 for answers in by_kind.values())
    top = Counter(q.answer for q in questions if q.kind == "existence").most_common(1)[0][1]
    assert control.intervals()["existence"].estimate == pytest.approx(top / kinds_count(questions, "existence"))


def kinds_count(questions, kind):
    return sum(q.kind == kind for q in questions)


def test_answers_are_kept_per_question_and_read_back_not_asked_again(corpus, built, tmp_path):
    engine = InferenceEngine.from_built(built)
    questions = heldout.heldout_questions(corpus, limit=4)
    runs = heldout.evaluate(engine, questions, [1, 8], tmp_path, log=lambda _: None)
    assert set(runs) == {"majority", "m=1/image", "m=8/image", "m=8/blank"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m1-image.jsonl", "m8-blank.jsonl", "m8-image.jsonl"]
    saved = heldout.Answers.load(tmp_path / "m8-image.jsonl")
    assert saved.questions == questions and saved.predictions == runs["m=8/image"].predictions

    calls = []
    original = engine.generate
    engine.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    again = heldout.evaluate(engine, questions, [1, 8], tmp_path, log=lambda _: None)
    assert not calls and again["m=8/blank"].predictions == runs["m=8/blank"].predictions
    other = heldout.heldout_questions(corpus, limit=3)  # different questions: asked anew
    heldout.evaluate(engine, other, [8], tmp_path, log=lambda _: None)
    assert calls

    table = heldout.table(runs)
    assert table.count("\n") == 2 + len(runs) and "majority" in table
    gates = heldout.pilot_gates(runs, [1, 8])
    assert [g[0] for g in gates] == list(heldout.PILOT_GATES) and all(isinstance(g[3], bool) for g in gates)
    verdict = heldout.uses_image(runs, 8)
    assert verdict.verdict in ("reproduced", "contradicted", "inconclusive")
    assert verdict.comparison.groups == 4  # resampled by scene


def test_blank_control_keeps_the_size_and_removes_the_content():
    from PIL import Image

    image = Image.new("RGB", (40, 20), (200, 0, 0))
    blank = heldout.blank_like(image)
    assert blank.size == image.size and blank.getcolors() == [(800, heldout.BACKGROUND)]


def test_an_unknown_control_is_refused(corpus, built):
    with pytest.raises(ValueError, match="control"):
        heldout.answer(InferenceEngine.from_built(built), heldout.heldout_questions(corpus, limit=1), 2, "noise")
