"""The benchmarks' official scoring rules, written once and tested against hand-worked examples.

VQA accuracy follows the official VQA evaluation (GT-Vision-Lab's vqaEval.py, which VQAv2's and
VizWiz's servers run) applied to a prediction that LLaVA-1.5's submission converters first pass
through the EvalAI answer processor. TextVQA follows the M4C evaluator LLaVA-1.5 uses for it, which
normalises the ground-truth answers too. The differences matter at the edges and are tested.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# --- the official answer normalisation -------------------------------------------------------

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset(("a", "an", "the"))
# The contractions the official table restores: each written with its apostrophes; the table maps
# every spelling with one or more of them left out back to this form ("dont" -> "don't"). (Its
# "I'm"-type entries have capitalised keys, which never match lower-cased text, so they are left out.)
_CONTRACTED = tuple(
    """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll let's
ma'am mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't
she'd she'd've she's should've shouldn't shouldn't've somebody'd somebody'd've somebody'll
somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll
that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't
we'd've we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've
who'll who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll
y'all'd've you'd you'd've you'll you're you've
""".split()  # noqa: SIM905 (a table, easier to read as words)
)


def _spellings(word: str) -> list[str]:
    """Every way of writing `word` with at least one of its apostrophes left out."""
    pieces = word.split("'")
    variants = {""}
    for i, piece in enumerate(pieces):
        joins = ("",) if i == 0 else ("'", "")
        variants = {v + j + piece for v in variants for j in joins}
    return sorted(v for v in variants if v != word)


CONTRACTIONS = {spelling: word for word in _CONTRACTED for spelling in _spellings(word)}
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# The official pattern, kept as written: "(?!<=\d)" is a lookahead, not a lookbehind, so in effect
# a period is removed unless a digit follows it ("2.5" stays, "yes." loses its period).
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")


def process_punctuation(text: str) -> str:
    out = text
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or _COMMA_BETWEEN_DIGITS.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The EvalAI answer processor: lower case, drop commas, question marks and possessive
    apostrophes' attachment, punctuation, number words to digits, articles, contractions."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def _leave_one_out(prediction: str, answers: Sequence[str]) -> float:
    """min(#matches among the other answers / 3, 1), averaged over leaving each answer out."""
    if not answers:
        raise ValueError("VQA accuracy needs at least one ground-truth answer")
    matches = sum(a == prediction for a in answers)
    per_left_out = [min(1.0, (matches - (a == prediction)) / 3) for a in answers]
    return sum(per_left_out) / len(per_left_out)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 / VizWiz accuracy of one prediction against the (usually 10) human answers.

    As the official evaluation does: the answers are normalised for punctuation only, and only
    when they are not all the same; then the prediction is matched exactly."""
    pred = normalize_answer(prediction)  # LLaVA's submission converter
    answers = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    if len(set(answers)) > 1:
        answers = [process_punctuation(a) for a in answers]
        pred = process_digit_article(process_punctuation(pred))
    return _leave_one_out(pred, answers)


def textvqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """TextVQA accuracy as the M4C evaluator (LLaVA-1.5's) computes it: the prediction and every
    answer pass the full EvalAI normalisation, then the same leave-one-out average."""
    return _leave_one_out(normalize_answer(prediction), [normalize_answer(a) for a in answers])


# --- yes/no benchmarks ---------------------------------------------------------------------------


def pope_yes_no(text: str) -> str:
    """LLaVA's POPE parsing: the first sentence, commas dropped; "no"/"not"/"No" as a word means no."""
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return "no" if {"No", "no", "not"} & set(words) else "yes"


def mme_yes_no(text: str) -> str:
    """MME's official parsing: "yes"/"no" exactly, else which of them the first 4 characters hold."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


@dataclass(frozen=True)
class BinaryScores:
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float  # of the predictions, as LLaVA's script computes it (lmms-eval uses the labels)

    def as_dict(self, scale: float = 100.0) -> dict[str, float]:
        return {k: v * scale for k, v in self.__dict__.items()}


def binary_scores(predictions: Sequence[str], labels: Sequence[str], positive: str = "yes") -> BinaryScores:
    if len(predictions) != len(labels) or not labels:
        raise ValueError("need one prediction per label, and at least one")
    pred = [p == positive for p in predictions]
    gold = [g == positive for g in labels]
    tp = sum(p and g for p, g in zip(pred, gold, strict=True))
    fp = sum(p and not g for p, g in zip(pred, gold, strict=True))
    fn = sum(g and not p for p, g in zip(pred, gold, strict=True))
    tn = len(pred) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BinaryScores((tp + tn) / len(pred), precision, recall, f1, sum(pred) / len(pred))


# --- multiple choice -------------------------------------------------------------------------

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SCIENCEQA_LETTERS = ("A", "B", "C", "D", "E")  # eval_science_qa.py's --options


def scienceqa_letter(text: str, num_choices: int) -> str | None:
    """LLaVA-1.5's ScienceQA parsing: the bare letter, or "X. ..." , or one "The answer is X.";
    a letter beyond the choices, or anything else (an empty answer too), is a failed parse.
    (`eval_science_qa.py` tests membership in a list of letters: a substring test of "ABC..." would
    take "" or "AB" for a letter.)"""
    options = list(LETTERS[:num_choices])
    if text in SCIENCEQA_LETTERS:
        letter = text
    elif len(text) >= 3 and text[0] in SCIENCEQA_LETTERS and text[1:3] == ". ":
        letter = text[0]
    else:
        found = re.findall(r"The answer is ([A-Z]).", text)
        letter = found[0] if len(found) == 1 else None
    return letter if letter is not None and letter in options else None


def extract_option(text: str, choices: dict[str, str]) -> str | None:
    """MMBench's answer extraction (before its GPT fallback): exactly one option letter standing
    alone once punctuation is blanked out; else exactly one option's text inside the answer; else
    None (wrong). `choices` maps letters to option texts."""
    spaced = text
    for ch in ".()[],:;!*#{}":
        spaced = spaced.replace(ch, " ")
    words = spaced.split()
    letters = [letter for letter in choices if letter in words]
    if len(letters) == 1:
        return letters[0]
    if not letters:
        lowered = text.lower()
        found = [letter for letter, option in choices.items() if str(option).lower() in lowered]
        if len(found) == 1:
            return found[0]
    return None


# --- MMMU ----------------------------------------------------------------------------------------


def mmmu_choice(response: str, choices: dict[str, str], rng) -> str:
    """MMMU's multiple-choice parsing: "(A)" forms, else bare " A " letters, else (for answers of
    more than 5 words) option texts; of several candidates the last mentioned wins; none found
    means a random choice (MMMU's rule; `rng` is seeded per question so scores are reproducible)."""
    for ch in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(ch)
    padded = f" {response} "
    found = [c for c in choices if f"({c})" in padded]
    position = {c: padded.rfind(f"({c})") for c in found}
    if not found:
        found = [c for c in choices if f" {c} " in padded]
        position = {c: padded.rfind(f" {c} ") for c in found}
    if not found and len(padded.split()) > 5:
        found = [c for c, text in choices.items() if text.lower() in padded.lower()]
        position = {c: padded.lower().rfind(choices[c].lower()) for c in found}
    if not found:
        return rng.choice(sorted(choices))
    return max(found, key=lambda c: position[c])


_NUMBER_PATTERNS = (
    r"-?\b\d{1,3}(?:,\d{3})+\b",  # with thousands separators
    r"-?\d+(?:\.\d+)?[eE][+-]?\d+",  # scientific
    r"-?(?:\d+\.\d+|\.\d+|\d+)(?![eE][+-]?\d+)(?![,\d])",  # plain
)
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def mmmu_normalise(text: str) -> list:
    """A number rounded to 2 places, or a lower-cased string (a single character padded with a
    space on either side, so it only matches as a word)."""
    text = text.strip()
    number = _as_number(text)
    if number is not None:
        return [round(number, 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def mmmu_open_candidates(response: str) -> list:
    """MMMU's open-answer parsing: the shortest tail after a key phrase ("so", "is", "therefore",
    "=" in the last sentence, ...) of each sentence, plus every number in those tails, normalised."""
    response = response.strip().strip(".").lower()
    sentences = re.split(r"\.\s(?=[A-Z])|\n", response)
    tails = []
    for i, sentence in enumerate(sentences):
        indicators = _KEY_INDICATORS + (("=",) if i == len(sentences) - 1 else ())
        options = [sentence.split(ind)[-1].strip() for ind in indicators if ind in sentence]
        if options:
            shortest = min(options, key=len)
            if shortest not in (":", ",", ".", "!", "?", ";", "'"):
                tails.append(shortest)
    if not tails:
        tails = [response]
    candidates = list(tails)
    for tail in tails:
        for pattern in _NUMBER_PATTERNS:
            candidates += re.findall(pattern, tail)
    return [value for c in candidates for value in mmmu_normalise(c)]


def mmmu_open_correct(response: str, answers: list[str]) -> bool:
    """Any gold answer (normalised) equal to a parsed number, or inside a parsed string."""
    golds = [value for a in answers for value in mmmu_normalise(a)]
    for candidate in mmmu_open_candidates(response):
        if isinstance(candidate, str):
            if any(isinstance(g, str) and g in candidate for g in golds):
                return True
        elif candidate in golds:
            return True
    return False
