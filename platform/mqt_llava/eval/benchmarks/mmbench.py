"""MMBench dev (the TSV with answers and base64 images): LLaVA-1.5's prompt (hint, question,
lettered options, the option-letter suffix), the official answer extraction without its GPT
fallback, accuracy; `circular: true` asks every rotation of the options and counts a question right
only if every rotation is (MMBench's CircularEval)."""

from __future__ import annotations

import base64
import csv
import sys
from collections import defaultdict

from mqt_llava.eval.benchmarks.base import OPTION_SUFFIX, Benchmark, Sample, mean
from mqt_llava.eval.metrics import LETTERS, extract_option

csv.field_size_limit(sys.maxsize)  # a row holds a whole base64 image


def is_missing(value: str | None) -> bool:
    return value is None or value.strip() in ("", "nan", "NaN", "None")


class MMBench(Benchmark):
    name = "mmbench"
    title = "MMB"
    metric = "accuracy"
    defaults = {"tsv": "mmbench_dev_20230712.tsv", "circular": False}

    def samples(self) -> list[Sample]:
        with self.path("tsv").open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        out = []
        for row in rows:
            options = []
            for letter in LETTERS[:8]:  # the options end at the first missing letter
                if is_missing(row.get(letter)):
                    break
                options.append(row[letter].strip())
            answer = LETTERS.index(row["answer"].strip())
            image = base64.b64decode(row["image"])
            rounds = len(options) if self.options["circular"] else 1
            for r in range(rounds):
                rotated = options[r:] + options[:r]
                lines = [] if is_missing(row.get("hint")) else [row["hint"].strip()]
                lines.append(row["question"].strip())
                lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(rotated)]
                prompt = "\n".join(lines) + f"\n{OPTION_SUFFIX}"
                target = {"answer": LETTERS[(answer - r) % len(options)], "options": rotated, "index": row["index"]}
                group = row.get("category", "")
                out.append(Sample(f"{row['index']}/{r}", prompt, image, target, group, unit=row["index"]))
        return out

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        by_question: dict[str, list[bool]] = defaultdict(list)
        category = {}
        for s in samples:
            choices = dict(zip(LETTERS, s.target["options"], strict=False))
            by_question[s.target["index"]].append(
                extract_option(predictions.get(s.key, ""), choices) == s.target["answer"]
            )
            category[s.target["index"]] = s.group
        right = {index: all(rounds) for index, rounds in by_question.items()}
        scores = {"accuracy": 100 * mean(right.values())}
        for group in sorted(set(category.values()) - {""}):
            scores[f"accuracy/{group}"] = 100 * mean(ok for i, ok in right.items() if category[i] == group)
        return scores
