"""MME: yes/no questions, two per image (one true, one false) over 14 subtasks; the official
parsing and scores: per subtask acc + acc+ (the share of images with both questions right), each
out of 100, so 200 per subtask; perception = the sum of 10 subtasks, cognition = the sum of 4.

The prompt is LLaVA-1.5's (its `llava_mme.jsonl`): the release's question with its "Please answer
yes or no." taken out, then the short-answer suffix on a line of its own. (LLaVA's
`convert_answer_to_mme.py` puts the phrase back to find each answer's question.)"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from mqt_llava.eval.benchmarks.base import SHORT_ANSWER, Benchmark, Column, Sample
from mqt_llava.eval.metrics import mme_yes_no

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
YES_NO = "Please answer yes or no."


def mme_prompt(question: str) -> str:
    """LLaVA-1.5's MME prompt for a question line of the release."""
    return f"{question.replace(YES_NO, '').strip()}\n{SHORT_ANSWER}"


def subtask_files(directory: Path) -> list[tuple[Path, Path]]:
    """(question file, image) pairs in either of the release's layouts: `images/` beside
    `questions_answers_YN/`, or images and their .txt files side by side."""
    if (directory / "questions_answers_YN").is_dir():
        texts, images = directory / "questions_answers_YN", directory / "images"
    else:
        texts = images = directory
    pairs = []
    for text in sorted(texts.glob("*.txt")):
        image = next(
            (images / f"{text.stem}{s}" for s in IMAGE_SUFFIXES if (images / f"{text.stem}{s}").exists()), None
        )
        if image is None:
            raise FileNotFoundError(f"mme: no image for {text} in {images}")
        pairs.append((text, image))
    return pairs


class MME(Benchmark):
    name = "mme"
    title = "MME"
    metric = "perception"
    columns = (Column("perception", "MME-P", order=6, scale=2000.0), Column("cognition", "MME-C", order=7, scale=800.0))
    scale = 2000.0
    defaults = {"release": "MME_Benchmark_release_version"}

    def samples(self) -> list[Sample]:
        release = self.path("release")
        subtasks = [s for s in PERCEPTION + COGNITION if (release / s).is_dir()]
        if not subtasks:
            raise FileNotFoundError(f"mme: no subtask directory ({', '.join(PERCEPTION + COGNITION)}) in {release}")
        out = []
        for subtask in subtasks:
            for text, image in subtask_files(release / subtask):
                for i, line in enumerate(text.read_text().splitlines()):
                    if not line.strip():
                        continue
                    question, answer = line.rsplit("\t", 1)
                    target = {"answer": answer.strip().lower(), "image": image.name}
                    key = f"{subtask}/{image.name}/{i}"
                    unit = f"{subtask}/{image.name}"
                    out.append(Sample(key, mme_prompt(question), str(image), target, subtask, unit=unit))
        return out

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        right: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
        for s in samples:
            ok = mme_yes_no(predictions.get(s.key, "").strip()) == s.target["answer"]
            right[s.group][s.unit or s.target["image"]].append(ok)  # an image's two questions
        scores: dict[str, float] = {}
        for subtask, images in right.items():
            answers = [ok for per_image in images.values() for ok in per_image]
            acc = 100 * sum(answers) / len(answers)
            acc_plus = 100 * sum(all(per_image) for per_image in images.values()) / len(images)
            scores |= {f"{subtask}/acc": acc, f"{subtask}/acc_plus": acc_plus, f"{subtask}/score": acc + acc_plus}
        present_p = [s for s in PERCEPTION if s in right]
        present_c = [s for s in COGNITION if s in right]
        if present_p:
            scores["perception"] = sum(scores[f"{s}/score"] for s in present_p)
            scores["perception_max"] = 200.0 * len(present_p)  # 2000 with all 10 subtasks
        if present_c:
            scores["cognition"] = sum(scores[f"{s}/score"] for s in present_c)
            scores["cognition_max"] = 200.0 * len(present_c)
        return scores
