"""The toy world's question set (mqt_llava.toy.heldout.QUESTIONS) for the generic held-out
evaluation: one question of each kind per scene in the benchmarks' wording, its blank image (an empty
scene), its pilot gates, and the name a spec gives it; evaluated on a real (small, untrained) engine."""

from collections import Counter

import pytest
from PIL import Image

from mqt_llava.eval import heldout
from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.toy.heldout import PILOT_GATES, QUESTIONS, QUESTIONS_REFERENCE, empty_scene, heldout_questions
from mqt_llava.toy.world import BACKGROUND, FINE_KINDS, KINDS, YES_NO


def test_one_question_of_each_kind_per_scene_in_the_benchmarks_wording(heldout_corpus):
    questions = QUESTIONS.questions(heldout_corpus, None)
    kinds = Counter(q.kind for q in questions)
    assert set(kinds) == set(KINDS) and min(kinds.values()) >= 9
    assert [q.scene for q in questions] == sorted(q.scene for q in questions)
    assert all(YES_NO in q.text for q in questions if q.kind in ("existence", "occupancy"))
    assert heldout_questions(heldout_corpus) == questions  # a function of (corpus, seed)
    assert len({q.scene for q in QUESTIONS.questions(heldout_corpus, 3)}) == 3


def test_the_set_declares_the_worlds_kinds_and_a_spec_names_it():
    assert QUESTIONS.kinds == KINDS and QUESTIONS.fine_kinds == FINE_KINDS
    assert heldout.load_question_set(QUESTIONS_REFERENCE) is QUESTIONS


def test_majority_control_answers_each_kinds_commonest_answer(heldout_corpus):
    questions = heldout_questions(heldout_corpus)
    control = heldout.majority_answers(questions)
    by_kind = {}
    for q, p in zip(questions, control.predictions, strict=True):
        by_kind.setdefault(q.kind, set()).add(p)
    assert all(len(answers) == 1 for answers in by_kind.values())
    top = Counter(q.answer for q in questions if q.kind == "existence").most_common(1)[0][1]
    existence = sum(q.kind == "existence" for q in questions)
    assert control.intervals(KINDS)["existence"].estimate == pytest.approx(top / existence)


def test_the_blank_control_is_an_empty_scene_of_the_same_size():
    image = Image.new("RGB", (40, 20), (200, 0, 0))
    blank = QUESTIONS.blank(image)
    assert blank.size == image.size and blank.getcolors() == [(800, BACKGROUND)]
    assert QUESTIONS.blank is empty_scene


def test_the_world_evaluated_at_two_budgets_with_its_table_gates_and_blank(heldout_corpus, built, tmp_path):
    engine = InferenceEngine.from_built(built)
    questions = heldout_questions(heldout_corpus, limit=4)
    runs = heldout.evaluate(engine, questions, [1, 8], tmp_path, QUESTIONS.blank, log=lambda _: None)
    assert set(runs) == {"majority", "m=1/image", "m=8/image", "m=8/blank"}

    blanks = [empty_scene(Image.open(q.image_path).convert("RGB")) for q in questions]
    requests = [Request(q.text, image) for q, image in zip(questions, blanks, strict=True)]
    assert runs["m=8/blank"].predictions == engine.generate(requests, 8, max_new_tokens=heldout.MAX_NEW_TOKENS)

    table = heldout.table(runs, QUESTIONS.kinds)
    assert table.splitlines()[0] == "|  | " + " | ".join(KINDS) + " | all (95 % interval) |"
    assert table.count("\n") == 2 + len(runs) and "majority" in table
    gates = QUESTIONS.gates(runs, [1, 8])
    assert [g.name for g in gates] == list(PILOT_GATES) and all(isinstance(g.passed, bool) for g in gates)
    assert gates[0].figure == runs["m=8/image"].intervals()["existence"].estimate
    assert all(g.passed == (g.figure >= g.threshold) for g in gates)
