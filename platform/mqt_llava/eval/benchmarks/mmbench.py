"""MMBench (the TSV with base64 images): LLaVA-1.5's `model_vqa_mmbench.py` prompt (hint, question,
lettered options, the option-letter suffix), one answer per row of the TSV, and the upload file
`convert_mmbench_for_submission.py` writes for MMBench's evaluation server.

The released TSVs hold CircularEval already: a question with n options is n rows, the options
rotated, the copies indexed index + k x 1,000,000. The server (and VLMEvalKit after it) groups the
rows by index mod 1,000,000 and counts a question right only if every row of its group is, matching
each answer to an option first by the option-letter and option-text rules used here, then by a GPT
model for answers those rules cannot place. The paper's MMB is the server's figure: with
`local: false` (the llava-7b preset) the sweep writes the upload file and reports no number. The
class default (`local: true`, what the toy world uses) also scores the groups here, without the GPT
step, so an answer the rules cannot place is wrong: at most the server's figure, under a column of
its own.
"""

from __future__ import annotations

import base64
import csv
import io
import sys
from collections import defaultdict
from typing import Any

from mqt_llava.eval.benchmarks.base import OPTION_SUFFIX, Benchmark, Column, Sample, mean
from mqt_llava.eval.metrics import extract_option

csv.field_size_limit(sys.maxsize)  # a row holds a whole base64 image

OPTION_LETTERS = "ABCD"  # model_vqa_mmbench.py's options
COPY_STRIDE = 1_000_000  # a circular copy's index: the question's + k x this
# The columns convert_mmbench_for_submission.py drops before it inserts "prediction" at position 6.
UPLOAD_DROPS = ("hint", "category", "source", "image", "comment", "l2-category")
UPLOAD_PREDICTION_AT = 6
# What pandas.read_table (the official scripts' reader) reads as a missing value, and the strings
# the scripts' is_none() treats as missing after it.
PANDAS_NA = frozenset(
    (
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    )
)


def is_missing(value: str | None) -> bool:
    return value is None or value in PANDAS_NA or value.lower() in ("nan", "none")


def group_index(index: str) -> int:
    """The question a row of the TSV asks: its index with the circular copy's offset taken off."""
    return int(index) % COPY_STRIDE


class MMBench(Benchmark):
    name = "mmbench"
    title = "MMB"
    metric = "accuracy"
    columns = (Column("accuracy", "MMB", order=9),)
    defaults = {"tsv": "mmbench_dev_20230712.tsv", "local": True}  # the llava-7b preset: local false, the paper's

    @property
    def server_scored(self) -> bool:
        return not self.options["local"]

    @property
    def column_title(self) -> str:
        return f"{self.title} (local, no GPT matching)" if self.options["local"] else self.title

    def samples(self) -> list[Sample]:
        with self.path("tsv").open(newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            rows, columns = list(reader), list(reader.fieldnames or [])
        if self.options["local"] and "answer" not in columns:
            raise ValueError(
                f"mmbench: {self.options['tsv']} has no answer column (a test split): only MMBench's evaluation "
                "server scores it; set mmbench.local=false to write its upload file"
            )
        kept = [c for c in columns if c not in UPLOAD_DROPS]
        out = []
        for row in rows:
            options = []
            for letter in OPTION_LETTERS:  # the options end at the first missing letter
                if is_missing(row.get(letter)):
                    break
                options.append(row[letter])
            question = row["question"]
            if not is_missing(row.get("hint")):
                question = f"{row['hint']}\n{question}"
            lines = [question] + [f"{OPTION_LETTERS[i]}. {option}" for i, option in enumerate(options)]
            group = group_index(row["index"])
            target = {
                "answer": row["answer"].strip() if "answer" in row else None,
                "options": options,
                "group": group,
                "upload": [[c, row[c]] for c in kept],  # the row as the upload file carries it
            }
            image = base64.b64decode(row["image"])
            out.append(
                Sample(
                    row["index"],
                    "\n".join(lines) + f"\n{OPTION_SUFFIX}",
                    image,
                    target,
                    row.get("category", ""),
                    unit=str(group),
                )
            )
        return out

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        if self.server_scored:
            return {}
        rows: dict[int, list[bool]] = defaultdict(list)
        category = {}
        for s in samples:
            choices = dict(zip(OPTION_LETTERS, s.target["options"], strict=False))
            rows[s.target["group"]].append(extract_option(predictions.get(s.key, ""), choices) == s.target["answer"])
            category[s.target["group"]] = s.group
        right = {group: all(hits) for group, hits in rows.items()}  # CircularEval: every rotation right
        scores = {"accuracy": 100 * mean(right.values())}
        for name in sorted(set(category.values()) - {""}):
            scores[f"accuracy/{name}"] = 100 * mean(ok for g, ok in right.items() if category[g] == name)
        return scores

    def submission(self, samples, predictions) -> dict[str, Any]:
        """The .xlsx convert_mmbench_for_submission.py writes: the TSV's rows without the hint,
        category, source, image, comment and l2-category columns, the model's answer as it is
        (the server matches it to an option) in a "prediction" column inserted at position 6."""
        from openpyxl import Workbook
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # control characters a sheet cannot hold

        workbook = Workbook()
        sheet = workbook.active
        sheet.title = "Sheet1"  # pandas' to_excel name
        for i, s in enumerate(samples):
            columns = [c for c, _ in s.target["upload"]]
            values = [cell_value(c, v) for c, v in s.target["upload"]]
            if i == 0:
                columns.insert(UPLOAD_PREDICTION_AT, "prediction")
                sheet.append(columns)
            answer = predictions.get(s.key)  # unanswered: an empty cell, as the converter leaves it
            values.insert(UPLOAD_PREDICTION_AT, None if answer is None else ILLEGAL_CHARACTERS_RE.sub("", answer))
            sheet.append(values)
        buffer = io.BytesIO()
        workbook.save(buffer)
        return {f"{self.path('tsv').stem}.xlsx": buffer.getvalue()}


def cell_value(column: str, value: str):
    """A TSV field as pandas reads it and writes it to the sheet: the index a number, a missing
    value an empty cell, text as it is."""
    if column == "index":
        return int(value)
    return None if is_missing(value) else value
