"""ScienceQA-IMG: the test split's questions that have an image, in LLaVA-1.5's prompt (context,
question, lettered options, the option-letter suffix); LLaVA's letter parsing; accuracy.

An answer the parsing cannot read counts as wrong, as LLaVA-1.5's `eval_science_qa.py` scores it
(its `get_pred_idx` returns -1 before the random pick of the first LLaVA release, which it keeps
as unreachable code). `unparsed: random` restores that pick, seeded per question (`seed`, default 0)
so a rerun, or any subset of the questions, picks the same option."""

from __future__ import annotations

import random

from mqt_llava.eval.benchmarks.base import OPTION_SUFFIX, Benchmark, Column, Sample, accuracy_by_group
from mqt_llava.eval.metrics import LETTERS, scienceqa_letter

UNPARSED = ("wrong", "random")


def scienceqa_prompt(problem: dict) -> str:
    lines = [f"Context: {problem['hint']}"] if problem.get("hint") else []
    lines.append(problem["question"])
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(problem["choices"])]
    return "\n".join(lines) + f"\n{OPTION_SUFFIX}"


def random_option(pid: str, choices: int, seed: int) -> int:
    """The option picked for an unreadable answer: a function of the seed and the question only."""
    return random.Random(f"{seed}/{pid}").randrange(choices)


class ScienceQA(Benchmark):
    name = "scienceqa"
    title = "SQA-IMG"
    metric = "accuracy"
    columns = (Column("accuracy", "SQA-IMG", order=2),)
    defaults = {
        "problems": "problems.json",
        "splits": "pid_splits.json",
        "split": "test",
        "images": "images",
        "unparsed": "wrong",
        "seed": 0,
    }

    def samples(self) -> list[Sample]:
        unparsed = self.options["unparsed"]
        if unparsed not in UNPARSED:
            raise ValueError(f"scienceqa.unparsed must be one of {', '.join(UNPARSED)}, not {unparsed!r}")
        problems = self.read_json("problems")
        split = self.options["split"]
        out = []
        for pid in self.read_json("splits")[split]:
            problem = problems[pid]
            if not problem.get("image"):
                continue  # the IMG subset
            image = self.root / self.options["images"] / split / pid / problem["image"]
            target = {"answer": problem["answer"], "choices": len(problem["choices"])}
            out.append(Sample(pid, scienceqa_prompt(problem), str(image), target, problem.get("subject", "")))
        return out

    def chosen(self, sample: Sample, prediction: str) -> int:
        """The option index the answer gives; -1 (wrong) where it gives none, or the seeded pick."""
        letter = scienceqa_letter(prediction, sample.target["choices"])
        if letter is not None:
            return LETTERS.index(letter)
        if self.options["unparsed"] == "random":
            return random_option(sample.key, sample.target["choices"], int(self.options["seed"]))
        return -1

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        hit = {s.key: self.chosen(s, predictions.get(s.key, "")) == s.target["answer"] for s in samples}
        return accuracy_by_group(samples, hit)
