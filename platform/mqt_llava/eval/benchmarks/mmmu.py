"""MMMU validation (the Hugging Face release: one Parquet file per subject): MMMU's own prompts and
its multiple-choice and open-answer parsing. The model takes one image, so a question's first image
is the one it sees (MMMU questions with several images are marked in the group `multi-image`)."""

from __future__ import annotations

import ast
import random

import pyarrow.parquet as pq

from mqt_llava.eval.benchmarks.base import OPTION_SUFFIX, SHORT_ANSWER, Benchmark, Column, Sample, accuracy_by_group
from mqt_llava.eval.metrics import LETTERS, mmmu_choice, mmmu_open_correct


def literal_list(value) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return [str(value)]
    return [str(v) for v in parsed] if isinstance(parsed, list) else [str(parsed)]


class MMMU(Benchmark):
    name = "mmmu"
    title = "MMMU"
    metric = "accuracy"
    columns = (Column("accuracy", "MMMU", order=8),)
    defaults = {"glob": "*/validation-*.parquet"}

    def samples(self) -> list[Sample]:
        files = sorted(self.root.glob(self.options["glob"]))
        if not files:
            raise FileNotFoundError(f"mmmu: no file matches {self.root}/{self.options['glob']}")
        out = []
        for table in (pq.read_table(f) for f in files):
            for row in table.to_pylist():
                images = [row[f"image_{i}"] for i in range(1, 8) if row.get(f"image_{i}")]
                image = images[0]["bytes"] if images else None
                group = row.get("subfield") or ""
                if len(images) > 1:
                    group = "multi-image"
                if row["question_type"] == "multiple-choice":
                    options = literal_list(row["options"])
                    listed = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
                    prompt = f"{row['question']}\n\n{listed}\n\n{OPTION_SUFFIX}"
                    target = {"type": "mc", "answer": row["answer"], "options": options}
                else:
                    prompt = f"{row['question']}\n\n{SHORT_ANSWER}"
                    target = {"type": "open", "answers": literal_list(row["answer"])}
                out.append(Sample(row["id"], prompt, image, target, group))
        return out

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        hit = {}
        for s in samples:
            response = predictions.get(s.key, "")
            if s.target["type"] == "mc":
                choices = dict(zip(LETTERS, s.target["options"], strict=False))
                hit[s.key] = mmmu_choice(response, choices, random.Random(s.key)) == s.target["answer"]
            else:
                hit[s.key] = mmmu_open_correct(response, s.target["answers"])
        return accuracy_by_group(samples, hit)
