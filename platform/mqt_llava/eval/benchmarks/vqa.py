"""VQAv2, VizWiz and TextVQA: open short answers scored by VQA accuracy.

VQAv2 test-dev and VizWiz test have no public answers: their split writes the server's submission
file and reports no score; the val splits are scored locally with the same official metric.
"""

from __future__ import annotations

from typing import Any

from mqt_llava.eval.benchmarks.base import SHORT_ANSWER, Benchmark, Sample, accuracy_by_group
from mqt_llava.eval.metrics import normalize_answer, textvqa_accuracy, vqa_accuracy

VIZWIZ_INSTRUCTION = "When the provided information is insufficient, respond with 'Unanswerable'."


class VQAv2(Benchmark):
    name = "vqav2"
    title = "VQAv2"
    metric = "accuracy"
    defaults = {
        "split": "val",
        "val_questions": "v2_OpenEnded_mscoco_val2014_questions.json",
        "val_annotations": "v2_mscoco_val2014_annotations.json",
        "val_images": "val2014",
        "image_prefix": "COCO_val2014_",
        "test_questions": "llava_vqav2_mscoco_test-dev2015.jsonl",  # LLaVA's test-dev question file
        "test_images": "test2015",
    }

    def samples(self) -> list[Sample]:
        if self.options["split"] == "test-dev":
            images = self.root / self.options["test_images"]
            return [
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
        if self.options["split"] == "test-dev":
            return {}  # scored by the evaluation server from the submission file
        return vqa_scores(samples, predictions, vqa_accuracy)

    def submission(self, samples, predictions) -> dict[str, Any]:
        if self.options["split"] != "test-dev":
            return {}
        # LLaVA's converter: every question gets an entry, normalised as EvalAI does.
        rows = [{"question_id": int(s.key), "answer": normalize_answer(predictions.get(s.key, ""))} for s in samples]
        return {"vqav2_test-dev_submission.json": rows}


class VizWiz(Benchmark):
    name = "vizwiz"
    title = "VizWiz"
    metric = "accuracy"
    defaults = {"split": "val", "val": "val.json", "val_images": "val", "test": "test.json", "test_images": "test"}

    def samples(self) -> list[Sample]:
        split = self.options["split"]
        if split not in ("val", "test"):
            raise ValueError(f"vizwiz.split must be val or test, not {split!r}")
        images = self.root / self.options[f"{split}_images"]
        return [
            Sample(
                q["image"],  # VizWiz has one question per image, keyed by the image name
                f"{q['question']}\n{VIZWIZ_INSTRUCTION}\n{SHORT_ANSWER}",
                str(images / q["image"]),
                [a["answer"] for a in q.get("answers", [])] or None,
                q.get("answer_type", ""),
            )
            for q in self.read_json(split)
        ]

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        if self.options["split"] == "test":
            return {}
        return vqa_scores(samples, predictions, vqa_accuracy)

    def submission(self, samples, predictions) -> dict[str, Any]:
        if self.options["split"] != "test":
            return {}
        rows = [{"image": s.key, "answer": normalize_answer(predictions.get(s.key, ""))} for s in samples]
        return {"vizwiz_test_submission.json": rows}


class TextVQA(Benchmark):
    name = "textvqa"
    title = "TextVQA"
    metric = "accuracy"
    defaults = {"annotations": "TextVQA_0.5.1_val.json", "images": "train_images", "ocr": True}

    def samples(self) -> list[Sample]:
        images = self.root / self.options["images"]
        out = []
        for q in self.read_json("annotations")["data"]:
            prompt = q["question"]
            if self.options["ocr"] and q.get("ocr_tokens"):  # LLaVA-1.5's OCR-token prompt variant
                prompt += "\nReference OCR token: " + ", ".join(q["ocr_tokens"])
            out.append(
                Sample(
                    str(q["question_id"]),
                    f"{prompt}\n{SHORT_ANSWER}",
                    str(images / f"{q['image_id']}.jpg"),
                    q["answers"],
                )
            )
        return out

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        return vqa_scores(samples, predictions, textvqa_accuracy)


def vqa_scores(samples: list[Sample], predictions: dict[str, str], accuracy) -> dict[str, float]:
    return accuracy_by_group(samples, {s.key: accuracy(predictions.get(s.key, ""), s.target) for s in samples})
