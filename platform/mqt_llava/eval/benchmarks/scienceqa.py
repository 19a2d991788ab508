"""ScienceQA-IMG: the test split's questions that have an image, in LLaVA-1.5's prompt (context,
question, lettered options, the option-letter suffix); LLaVA's letter parsing; accuracy."""

from __future__ import annotations

from mqt_llava.eval.benchmarks.base import OPTION_SUFFIX, Benchmark, Sample, accuracy_by_group
from mqt_llava.eval.metrics import LETTERS, scienceqa_letter


def scienceqa_prompt(problem: dict) -> str:
    lines = [f"Context: {problem['hint']}"] if problem.get("hint") else []
    lines.append(problem["question"])
    lines += [f"{LETTERS[i]}. {choice}" for i, choice in enumerate(problem["choices"])]
    return "\n".join(lines) + f"\n{OPTION_SUFFIX}"


class ScienceQA(Benchmark):
    name = "scienceqa"
    title = "SQA-IMG"
    metric = "accuracy"
    defaults = {"problems": "problems.json", "splits": "pid_splits.json", "split": "test", "images": "images"}

    def samples(self) -> list[Sample]:
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

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        hit = {}
        for s in samples:
            letter = scienceqa_letter(predictions.get(s.key, ""), s.target["choices"])
            hit[s.key] = letter is not None and LETTERS.index(letter) == s.target["answer"]
        return accuracy_by_group(samples, hit)
