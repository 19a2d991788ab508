"""GQA test-dev balanced: LLaVA's conversion of the answer (final period stripped, lower case),
then the official script's exact match."""

from __future__ import annotations

from mqt_llava.eval.benchmarks.base import SHORT_ANSWER, Benchmark, Column, Sample, accuracy_by_group


def gqa_answer(text: str) -> str:
    return text.rstrip(".").lower()


class GQA(Benchmark):
    name = "gqa"
    title = "GQA"
    metric = "accuracy"
    columns = (Column("accuracy", "GQA", order=4),)
    defaults = {"questions": "testdev_balanced_questions.json", "images": "images"}

    def samples(self) -> list[Sample]:
        images = self.root / self.options["images"]
        return [
            Sample(
                qid,
                f"{q['question']}\n{SHORT_ANSWER}",
                str(images / f"{q['imageId']}.jpg"),
                q["answer"],
                q.get("types", {}).get("structural", ""),
            )
            for qid, q in self.read_json("questions").items()
        ]

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        hit = {s.key: gqa_answer(predictions.get(s.key, "")) == s.target for s in samples}
        return accuracy_by_group(samples, hit)
