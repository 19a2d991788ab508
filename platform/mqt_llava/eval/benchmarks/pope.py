"""POPE (random / popular / adversarial): yes/no object probing on COCO val2014, LLaVA's parsing;
accuracy, precision, recall, F1 and the yes-ratio of the predictions, per split and averaged (the
paper's POPE number is the F1 averaged over the three splits)."""

from __future__ import annotations

from mqt_llava.eval.benchmarks.base import SHORT_ANSWER, Benchmark, Column, Sample, mean, read_jsonl
from mqt_llava.eval.metrics import binary_scores, pope_yes_no

SPLITS = ("random", "popular", "adversarial")


class POPE(Benchmark):
    name = "pope"
    title = "POPE"
    metric = "f1"
    columns = (Column("f1", "POPE", order=5),)
    defaults = {"annotations": "coco", "file_pattern": "coco_pope_{split}.json", "images": "val2014", "splits": SPLITS}

    def samples(self) -> list[Sample]:
        images = self.root / self.options["images"]
        out = []
        for split in self.options["splits"]:
            name = f"{self.options['annotations']}/{self.options['file_pattern'].format(split=split)}"
            for q in read_jsonl(self.existing(name, "file_pattern")):
                out.append(
                    Sample(
                        f"{split}/{q['question_id']}",
                        f"{q['text']}\n{SHORT_ANSWER}",
                        str(images / q["image"]),
                        q["label"],
                        split,
                    )
                )
        return out

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        scores: dict[str, float] = {}
        per_split = {}
        for split in self.options["splits"]:
            chosen = [s for s in samples if s.group == split]
            if not chosen:  # a --limit run may not reach every split
                continue
            result = binary_scores(
                [pope_yes_no(predictions.get(s.key, "")) for s in chosen], [s.target for s in chosen]
            )
            per_split[split] = result.as_dict()
            scores |= {f"{name}/{split}": value for name, value in per_split[split].items()}
        for name in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            scores[name] = mean(per_split[split][name] for split in per_split)
        return scores
