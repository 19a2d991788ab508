"""The generic held-out evaluation on a question set of its own (no toy world): any registered
backend answers, every answer is kept and read back on a rerun, the answer-prior and blank-image
controls use the same questions, intervals and tables follow the set's kinds, and a question set is
loaded by the name a spec gives it."""

from pathlib import Path

import pytest
from PIL import Image

from mqt_llava.eval import heldout
from mqt_llava.eval.heldout import Gate, Question, QuestionSet
from mqt_llava.inference import Completion, Request, load_engine
from mqt_llava.model.export import save_export

COLOURS = {(200, 30, 30): "red", (30, 160, 60): "green", (40, 60, 200): "blue"}
WHITE = (255, 255, 255)


def shapes_questions(source: Path, limit: int | None = None) -> list[Question]:
    """Per image: the colour of its square (fine: a detail) and whether it shows anything (coarse)."""
    questions = []
    for index, path in enumerate(sorted(source.glob("*.png"))[:limit]):
        colour = path.stem.split("-")[1]
        questions.append(Question(index, "colour", "What colour is the square?", colour, str(path)))
        questions.append(Question(index, "anything", "Is there a square?", "yes", str(path)))
    return questions


def gates(runs, budgets):
    top = runs[f"m={max(budgets)}/image"].intervals()["all"].estimate
    return [Gate("all at M", top, 0.5, top >= 0.5)]


SHAPES = QuestionSet(
    "shapes", ("anything", "colour"), shapes_questions, fine_kinds=("colour",), gates=gates
)  # the default blank: each image's mean colour


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Squares of three colours on white, two images each: what the questions ask about."""
    root = tmp_path_factory.mktemp("shapes")
    for i in range(6):
        rgb = list(COLOURS)[i % 3]
        image = Image.new("RGB", (32, 32), WHITE)
        image.paste(rgb, (8, 8, 24, 24))
        image.save(root / f"{i}-{COLOURS[rgb]}.png")
    return root


class SquareReader:
    """An engine with only the registry's interface (no `generate`, no `model`): it names the colour
    at the image's centre, and says "yes" there is a square when that colour is one it knows."""

    max_visual_tokens, min_visual_tokens, max_context = 8, 1, 512

    def __init__(self):
        self.calls = []

    def complete(self, requests, num_visual_tokens, max_new_tokens=32, **sampling):
        self.calls.append((num_visual_tokens, len(requests), max_new_tokens))
        out = []
        for r in requests:
            name = COLOURS.get(r.image.getpixel((16, 16)), "none")
            if r.question.startswith("Is"):
                name = "No." if name == "none" else "Yes."
            out.append(Completion(name, 10, 1, "stop"))
        return out


def test_answers_are_kept_per_question_read_back_and_judged_beside_both_controls(images, tmp_path):
    engine = SquareReader()
    questions = SHAPES.questions(images, None)
    runs = heldout.evaluate(engine, questions, [2, 8], tmp_path, SHAPES.blank, log=lambda _: None)
    assert list(runs) == ["majority", "m=2/image", "m=8/image", "m=8/blank"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m2-image.jsonl", "m8-blank.jsonl", "m8-image.jsonl"]
    assert [m for m, _, _ in engine.calls] == [2, 8, 8] and {n for _, _, n in engine.calls} == {8}

    assert runs["m=8/image"].intervals(SHAPES.kinds)["all"].estimate == 1.0  # "Yes." and "yes" match
    assert runs["m=8/blank"].predictions == ["none", "No."] * 6  # the mean colour shows no square
    prior = runs["majority"].intervals(SHAPES.kinds)  # each kind's commonest answer, without looking
    assert prior["anything"].estimate == 1.0 and prior["colour"].estimate == pytest.approx(1 / 3)
    verdict = heldout.uses_image(runs, 8)
    assert verdict.verdict == "reproduced" and verdict.comparison.groups == 6  # resampled by image

    saved = heldout.Answers.load(tmp_path / "m8-blank.jsonl")
    assert saved.questions == questions and saved.predictions == runs["m=8/blank"].predictions
    engine.calls.clear()
    again = heldout.evaluate(engine, questions, [2, 8], tmp_path, SHAPES.blank, log=lambda _: None)
    assert not engine.calls and again["m=2/image"].predictions == runs["m=2/image"].predictions
    heldout.evaluate(engine, questions[:4], [8], tmp_path, SHAPES.blank, log=lambda _: None)  # other questions
    assert engine.calls

    assert heldout.focus(engine, questions, [8]) == {}  # a backend without a model to look into
    assert SHAPES.gates(runs, [2, 8]) == [Gate("all at M", 1.0, 0.5, True)]


def test_intervals_and_tables_follow_the_sets_kinds(images):
    questions = SHAPES.questions(images, 3)
    answers = heldout.Answers(questions, ["red", "yes", "blue", "no", "blue", " Yes. "])
    assert list(answers.intervals()) == ["colour", "anything", "all"]  # as first asked
    intervals = answers.intervals(SHAPES.kinds)
    assert list(intervals) == ["anything", "colour", "all"]
    assert intervals["colour"].estimate == pytest.approx(2 / 3) and intervals["anything"].estimate == pytest.approx(
        2 / 3
    )
    assert list(answers.intervals(("colour", "missing"))) == ["colour", "all"]  # a kind never asked: no entry
    table = heldout.table({"run": answers}, SHAPES.kinds)
    assert table.splitlines()[0] == "|  | anything | colour | all (95 % interval) |"
    assert table.splitlines()[2].startswith("| run | 66.7 | 66.7 | 66.7 [")
    assert SHAPES.coarse_kinds == ("anything",)


def test_the_registrys_hf_engine_answers_as_its_own_generate_does(built, images, tmp_path):
    """The evaluation asks through the registry's interface (`complete`); on the HF backend that is
    what the engine's `generate` answers, question by question (with the image and with a blank)."""
    save_export(built, tmp_path / "export")
    engine = load_engine(tmp_path / "export", "hf")
    questions = SHAPES.questions(images, None)
    runs = heldout.evaluate(engine, questions, [3], tmp_path / "answers", SHAPES.blank, log=lambda _: None)
    for label, blank in (("m=3/image", None), ("m=3/blank", SHAPES.blank)):
        expected = []
        for i in range(0, len(questions), 16):  # evaluate's batches
            chunk = [Image.open(q.image_path).convert("RGB") for q in questions[i : i + 16]]
            pairs = zip(questions[i : i + 16], chunk, strict=True)
            requests = [Request(q.text, blank(image) if blank else image) for q, image in pairs]
            expected += engine.generate(requests, 3, max_new_tokens=heldout.MAX_NEW_TOKENS)
        assert runs[label].predictions == expected


def test_a_question_set_is_loaded_by_its_import_name_and_a_wrong_one_is_refused():
    assert heldout.load_question_set(f"{__name__}:SHAPES") is SHAPES
    with pytest.raises(ValueError, match="package.module:attribute"):
        heldout.load_question_set("shapes")
    with pytest.raises(ValueError, match="cannot be loaded"):
        heldout.load_question_set("mqt_llava.no_such_module:QUESTIONS")
    with pytest.raises(ValueError, match="cannot be loaded"):
        heldout.load_question_set(f"{__name__}:NO_SUCH_SET")
    with pytest.raises(ValueError, match="is a function, not a QuestionSet"):
        heldout.load_question_set(f"{__name__}:gates")
    with pytest.raises(ValueError, match=r"fine kinds \['size'\] are not among its kinds"):
        QuestionSet("bad", ("colour",), shapes_questions, fine_kinds=("size",))
