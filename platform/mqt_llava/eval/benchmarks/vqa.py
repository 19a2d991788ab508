"""VQAv2, VizWiz and TextVQA: open short answers scored by VQA accuracy.

The paper's VQAv2 and VizWiz numbers are test-dev and test, splits without public answers, scored
by their evaluation servers: there (`split: test-dev`, `split: test`, the llava-7b preset's) the
sweep asks LLaVA-1.5's question files as they are and writes the upload file LLaVA-1.5's converters
write, and reports no number. The val splits (the class default, which the toy world uses) are
scored here with the same official metric, under a column of their own ("VQAv2 (val, local)").

TextVQA asks LLaVA-1.5's question file (`llava_textvqa_val_v051_ocr.jsonl`), whose prompts carry
the image's OCR tokens, and takes each question's answers from the official annotation file
(`TextVQA_0.5.1_val.json`, which holds no OCR tokens) the way `eval_textvqa.py` pairs them: by
image and lower-cased question.
"""

from __future__ import annotations

from typing import Any

from mqt_llava.eval.benchmarks.base import SHORT_ANSWER, Benchmark, Column, Sample, accuracy_by_group
from mqt_llava.eval.metrics import normalize_answer, textvqa_accuracy, vqa_accuracy

VIZWIZ_INSTRUCTION = "When the provided information is insufficient, respond with 'Unanswerable'."
OCR_PREFIX = "Reference OCR token: "


class ServerOrValSplit(Benchmark):
    """A benchmark whose `split` is either `val`, scored here under its own column heading, or
    `server_split`, scored only by its evaluation server (the job writes the upload file)."""

    server_split: str

    @property
    def server_scored(self) -> bool:
        split, allowed = self.options["split"], ("val", self.server_split)
        if split not in allowed:
            raise ValueError(f"{self.name}.split must be one of {', '.join(allowed)}, not {split!r}")
        return split == self.server_split

    @property
    def column_title(self) -> str:
        return self.title if self.server_scored else f"{self.title} (val, local)"


class VQAv2(ServerOrValSplit):
    name = "vqav2"
    title = "VQAv2"
    server_split = "test-dev"
    metric = "accuracy"
    columns = (Column("accuracy", "VQAv2", order=3),)
    defaults = {
        "split": "val",  # the llava-7b preset: test-dev, the paper's
        "val_questions": "v2_OpenEnded_mscoco_val2014_questions.json",
        "val_annotations": "v2_mscoco_val2014_annotations.json",
        "val_images": "val2014",
        "image_prefix": "COCO_val2014_",
        "test_questions": "llava_vqav2_mscoco_test-dev2015.jsonl",  # LLaVA-1.5's test-dev question file
        "test_all_questions": "llava_vqav2_mscoco_test2015.jsonl",  # every test2015 question: the upload lists all
        "test_images": "test2015",
    }

    def samples(self) -> list[Sample]:
        if self.server_scored:
            self.path("test_all_questions")  # the upload needs it: missing is an error now, not after inference
            images = self.root / self.options["test_images"]
            return [  # LLaVA-1.5's prompt is the file's text, the short-answer suffix included
                Sample(str(q["question_id"]), q["text"], str(images / q["image"]), None, q.get("category", ""))
                for q in self.read_jsonl("test_questions")
            ]
        questions = self.read_json("val_questions")["questions"]
        answers = {a["question_id"]: a for a in self.read_json("val_annotations")["annotations"]}
        images = self.root / self.options["val_images"]
        out = []
        for q in questions:
            annotation = answers[q["question_id"]]
            image = images / f"{self.options['image_prefix']}{q['image_id']:012d}.jpg"
            out.append(
                Sample(
                    str(q["question_id"]),
                    f"{q['question']}\n{SHORT_ANSWER}",
                    str(image),
                    [a["answer"] for a in annotation["answers"]],
                    annotation.get("answer_type", ""),
                )
            )
        return out

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        if self.server_scored:
            return {}
        return vqa_scores(samples, predictions, vqa_accuracy)

    def submission(self, samples, predictions) -> dict[str, Any]:
        if not self.server_scored:
            return {}
        # As convert_vqav2_for_submission.py: one entry for every test2015 question, in that file's
        # order, the answer passed through the EvalAI answer processor, "" where none was given.
        rows = [
            {"question_id": q["question_id"], "answer": normalize_answer(predictions.get(str(q["question_id"]), ""))}
            for q in self.read_jsonl("test_all_questions")
        ]
        return {"vqav2_test-dev2015_upload.json": rows}


class VizWiz(ServerOrValSplit):
    name = "vizwiz"
    title = "VizWiz"
    server_split = "test"
    metric = "accuracy"
    columns = (Column("accuracy", "VizWiz", order=1),)
    defaults = {
        "split": "val",  # the llava-7b preset: test, the paper's
        "val": "val.json",  # the official annotations
        "val_images": "val",
        "test_questions": "llava_test.jsonl",  # LLaVA-1.5's test question file
        "test_images": "test",
    }

    def samples(self) -> list[Sample]:
        if self.server_scored:
            images = self.root / self.options["test_images"]
            return [
                Sample(str(q["question_id"]), q["text"], str(images / q["image"]), {"image": q["image"]})
                for q in self.read_jsonl("test_questions")
            ]
        images = self.root / self.options["val_images"]
        return [
            Sample(
                q["image"],  # VizWiz has one question per image, keyed by the image name
                f"{q['question']}\n{VIZWIZ_INSTRUCTION}\n{SHORT_ANSWER}",  # the wording of LLaVA-1.5's file
                str(images / q["image"]),
                [a["answer"] for a in q["answers"]],
                q.get("answer_type", ""),
            )
            for q in self.read_json("val")
        ]

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        if self.server_scored:
            return {}
        return vqa_scores(samples, predictions, vqa_accuracy)

    def submission(self, samples, predictions) -> dict[str, Any]:
        if not self.server_scored:
            return {}
        # As convert_vizwiz_for_submission.py: {image, answer} per question, in the question file's
        # order, the answer passed through the EvalAI answer processor. (The converter stops on an
        # unanswered question; here one whose image could not be read uploads as "", and the sweep
        # counts it as rejected.)
        rows = [{"image": s.target["image"], "answer": normalize_answer(predictions.get(s.key, ""))} for s in samples]
        return {"vizwiz_test_upload.json": rows}


def textvqa_question(prompt: str) -> str:
    """The question inside a prompt of LLaVA-1.5's TextVQA file, lower-cased: the rule of
    `eval_textvqa.py`'s prompt_processor, which pairs a prompt with its annotation."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        _, _, rest = prompt.partition("Question: ")
        question, found, _ = rest.partition(" Short answer:")
        if not found:
            raise ValueError(f"textvqa: cannot find the question in {prompt!r}")
    elif OCR_PREFIX in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith(OCR_PREFIX.rstrip()) else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(f"textvqa: a prompt of an unknown shape: {prompt!r}")
    return question.lower()


def without_ocr(prompt: str) -> str:
    return "\n".join(line for line in prompt.split("\n") if not line.startswith(OCR_PREFIX))


class TextVQA(Benchmark):
    name = "textvqa"
    title = "TextVQA"
    metric = "accuracy"
    defaults = {
        "questions": "llava_textvqa_val_v051_ocr.jsonl",  # LLaVA-1.5's prompts, OCR tokens included
        "annotations": "TextVQA_0.5.1_val.json",  # the official answers
        "images": "train_images",
        "ocr": True,  # false: the same prompts with the "Reference OCR token: ..." line left out
    }

    def samples(self) -> list[Sample]:
        annotations = {(a["image_id"], a["question"].lower()): a for a in self.read_json("annotations")["data"]}
        questions = self.read_jsonl("questions")
        if self.options["ocr"] and questions and not any(OCR_PREFIX in q["text"] for q in questions):
            raise ValueError(
                f"textvqa: {self.path('questions')} has no '{OCR_PREFIX.strip()}' line in any prompt; LLaVA-1.5's "
                f"prompts carry the OCR tokens (llava_textvqa_val_v051_ocr.jsonl). Set textvqa.ocr=false to ask "
                f"without them."
            )
        images = self.root / self.options["images"]
        out, seen = [], set()
        for number, q in enumerate(questions, 1):
            # In LLaVA-1.5's file a question's "question_id" is its image's id.
            annotation = annotations.get((q["question_id"], textvqa_question(q["text"])))
            if annotation is None:
                raise ValueError(
                    f"textvqa: line {number} of {self.options['questions']} matches no annotation "
                    f"in {self.options['annotations']} (by image id and question)"
                )
            key = str(annotation["question_id"])
            if key in seen:  # one question asked twice of an image: both answered, both scored
                key = f"{key}/{number}"
            seen.add(key)
            prompt = q["text"] if self.options["ocr"] else without_ocr(q["text"])
            out.append(Sample(key, prompt, str(images / q["image"]), annotation["answers"]))
        return out

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        return vqa_scores(samples, predictions, textvqa_accuracy)


def vqa_scores(samples: list[Sample], predictions: dict[str, str], accuracy) -> dict[str, float]:
    return accuracy_by_group(samples, {s.key: accuracy(predictions.get(s.key, ""), s.target) for s in samples})
