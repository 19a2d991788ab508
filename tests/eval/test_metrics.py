"""The official scoring rules against hand-worked examples, normalisation edge cases included."""

import random

import pytest

from mqt_llava.eval.metrics import (
    binary_scores,
    extract_option,
    mme_yes_no,
    mmmu_choice,
    mmmu_open_correct,
    normalize_answer,
    pope_yes_no,
    process_punctuation,
    scienceqa_letter,
    textvqa_accuracy,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("Two", "2"),  # number words become digits
        ("none", "0"),
        ("The dog.", "dog"),  # articles go, a final period goes
        ("a", ""),
        ("dont know", "don't know"),  # contractions get their apostrophe back
        ("wouldnt've", "wouldn't've"),
        ("im", "im"),  # the official table's I-forms never match lower-cased text
        ("2.5", "2.5"),  # a period before a digit stays
        ("1,000", "1000"),  # commas go before punctuation is looked at
        ("Yes!", "yes"),
        ("red-white", "red white"),  # punctuation without a space beside it becomes a space...
        ("red - white", "red white"),  # ...and with one it is deleted
        ("man's hat", "man 's hat"),  # the EvalAI processor detaches a possessive
        ("  Blue\n", "blue"),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_a_comma_between_digits_deletes_all_punctuation():
    # The official rule: once "3,5"-like text is present, punctuation is deleted, not spaced.
    assert process_punctuation("3,5 (x/y)") == "35 xy"
    assert process_punctuation("(x/y)") == " x y "


@pytest.mark.parametrize(
    "prediction, answers, accuracy",
    [
        ("two", ["2"] * 10, 1.0),
        ("Yes.", ["yes"] * 10, 1.0),
        ("yes", ["yes"] * 3 + ["no"] * 7, 0.9),  # 3 matches: 7 subsets see 3 (1.0), 3 see 2 (2/3)
        ("blue", ["blue"] * 2 + ["navy"] * 8, 0.6),  # 8 x 2/3 + 2 x 1/3, over 10
        ("cat", ["cat"] + ["dog"] * 9, 0.3),  # 9 x 1/3 + 1 x 0
        ("cow", ["dog"] * 10, 0.0),
        ("dog", ["a dog"] * 10, 0.0),  # unanimous answers are not normalised at all
        ("dog", ["a dog"] * 9 + ["dog"], 0.3),  # answers get punctuation processing only (lmms-eval: 1.0)
        ("red", ["red,"] * 5 + ["blue"] * 5, 0.0),  # official quirk: the comma becomes a space, unstripped
        ("red", ["red."] * 5 + ["blue"] * 5, 1.0),  # while a period is deleted
    ],
)
def test_vqa_accuracy(prediction, answers, accuracy):
    assert vqa_accuracy(prediction, answers) == pytest.approx(accuracy)


def test_textvqa_normalises_the_answers_too():
    assert textvqa_accuracy("dog", ["a dog"] * 9 + ["dog"]) == pytest.approx(1.0)
    assert textvqa_accuracy("Coca-Cola", ["coca cola"] * 10) == pytest.approx(1.0)


def test_vqa_accuracy_needs_answers():
    with pytest.raises(ValueError):
        vqa_accuracy("yes", [])


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("Yes", "yes"),
        ("Yes, there is a dog.", "yes"),
        ("No.", "no"),
        ("There is not a cat in the image", "no"),
        ("Yes. No other animal.", "yes"),  # only the first sentence counts
        ("no, none", "no"),  # commas dropped before the word test
        ("NO", "yes"),  # LLaVA's test is case-sensitive beyond "No"/"no"
    ],
)
def test_pope_parsing(text, parsed):
    assert pope_yes_no(text) == parsed


def test_binary_scores_by_hand():
    s = binary_scores(["yes", "yes", "no", "no"], ["yes", "no", "yes", "no"])
    assert (s.accuracy, s.precision, s.recall, s.f1, s.yes_ratio) == (0.5, 0.5, 0.5, 0.5, 0.5)
    s = binary_scores(["yes"] * 4, ["yes", "no", "no", "no"])
    assert s.precision == 0.25 and s.recall == 1.0 and s.f1 == pytest.approx(0.4) and s.yes_ratio == 1.0
    s = binary_scores(["no"] * 2, ["yes", "no"])
    assert s.precision == 0.0 and s.f1 == 0.0 and s.accuracy == 0.5


@pytest.mark.parametrize(
    "text, parsed",
    [("Yes", "yes"), ("yes, it is", "yes"), ("No", "no"), ("nope", "no"), ("I think yes", "other"), ("know", "no")],
)
def test_mme_parsing(text, parsed):
    assert mme_yes_no(text) == parsed


@pytest.mark.parametrize(
    "text, choices, letter",
    [
        ("A", 3, "A"),
        ("B. cat", 3, "B"),
        ("The answer is C.", 3, "C"),
        ("The answer is D.", 3, None),  # beyond the choices
        ("I think A", 3, None),
        ("E", 5, "E"),
        ("", 3, None),  # unanswered: not "A" (a substring test of "ABC..." would say so)
        ("AB", 3, None),
    ],
)
def test_scienceqa_letter(text, choices, letter):
    assert scienceqa_letter(text, choices) == letter


@pytest.mark.parametrize(
    "text, letter",
    [
        ("A", "A"),
        ("(B) cat", "B"),
        ("The answer is C", "C"),
        ("cat", "B"),  # no letter: the one option text inside the answer
        ("dog or cat", None),
        ("A or B", None),
        ("", None),
    ],
)
def test_mmbench_option_extraction(text, letter):
    assert extract_option(text, {"A": "dog", "B": "cat", "C": "cow"}) == letter


def test_mmmu_multiple_choice_parsing():
    choices = {"A": "London", "B": "Paris", "C": "Rome", "D": "Berlin"}
    rng = random.Random(0)
    assert mmmu_choice("(B)", choices, rng) == "B"
    assert mmmu_choice("B.", choices, rng) == "B"
    assert mmmu_choice("(C) is right because (A) is not", choices, rng) == "A"  # the last one mentioned
    assert mmmu_choice("The capital of France is Paris of course", choices, rng) == "B"  # option text, > 5 words
    picks = {mmmu_choice("no idea", choices, random.Random("q1")) for _ in range(3)}
    assert len(picks) == 1  # an unparsable answer is a random choice, reproducible per question


def test_mmmu_short_text_answers_are_not_matched_by_content():
    # "Paris" has fewer than 6 words, so MMMU's parser falls back to a random pick: over many
    # questions it is not always B.
    picks = {mmmu_choice("Paris", {"A": "London", "B": "Paris", "C": "Rome"}, random.Random(i)) for i in range(20)}
    assert len(picks) > 1


@pytest.mark.parametrize(
    "response, answers, correct",
    [
        ("The answer is 3.14159", ["3.14"], True),  # numbers compared rounded to 2 places
        ("so the total is 1,200 dollars", ["1200"], True),
        ("Paris", ["paris"], True),
        ("It is 12", ["13"], False),
        ("b", ["a"], False),
        ("Therefore x = 5", ["5"], True),
    ],
)
def test_mmmu_open_answers(response, answers, correct):
    assert mmmu_open_correct(response, answers) is correct
