"""LLaVA-Bench (in-the-wild) and MM-Vet: open-ended answers scored by a judge model through an
OpenAI-compatible endpoint. Without a judge they are skipped with the reason, never given a number.

LLaVA-Bench: the judge rates the reference answer (GPT-4's, given the image's description) and the
model's, 1-10 each; the score is the model's total over the reference's, x100, overall and per
category. MM-Vet: the judge grades each answer against the ground truth from 0.0 to 1.0; the score
is the mean x100, overall and per capability.
"""

from __future__ import annotations

import re
from collections import defaultdict

from mqt_llava.eval.benchmarks.base import Benchmark, Column, Sample, Skipped, mean

NO_JUDGE = "needs a judge model: set --judge-url and --judge-model (and the key's environment variable)"

LLAVA_BENCH_INSTRUCTION = (
    "You are given an image's description, a question about the image and two assistants' answers. "
    "Rate each answer's helpfulness, relevance, accuracy and level of detail with an overall score "
    "from 1 to 10 (higher is better). On the first line write only the two scores, for Assistant 1 "
    "and Assistant 2, separated by a space; then explain, without letting the order of the answers "
    "affect your judgement."
)
MMVET_INSTRUCTION = (
    "Compare the model's answer with the ground truth and give a correctness score from 0.0 to 1.0 "
    "(1.0: fully correct; partial credit for partly correct answers; '<AND>' in the ground truth "
    "means every part is required, '<OR>' means any part suffices). Reply with the score only.\n"
    "Example: Question: What is x in the equation? Ground truth: -1 <AND> -5. Answer: x = 3. Score: 0.0\n"
    "Example: Question: What is x in the equation? Ground truth: -1 <AND> -5. Answer: x = -1 or -5. Score: 1.0\n"
    "Example: Question: Which colour is the car? Ground truth: red <OR> dark red. Answer: It is red. Score: 1.0"
)


def first_two_scores(text: str) -> tuple[float, float] | None:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text.strip().splitlines()[0] if text.strip() else "")
    return (float(numbers[0]), float(numbers[1])) if len(numbers) >= 2 else None


def grade(text: str) -> float | None:
    found = re.search(r"\d+(?:\.\d+)?", text)
    if found is None:
        return None
    value = float(found.group())
    return value if 0.0 <= value <= 1.0 else None


class LlavaBench(Benchmark):
    name = "llava_bench"
    title = "LLaVA-W"
    metric = "relative_score"
    columns = (Column("relative_score", "LLaVA-W", order=10),)
    max_new_tokens = 512
    needs_judge = True
    defaults = {
        "questions": "questions.jsonl",
        "context": "context.jsonl",
        "reference": "answers_gpt4.jsonl",
        "images": "images",
    }

    def samples(self) -> list[Sample]:
        captions = {c["image"]: c["caption"] for c in self.read_jsonl("context")}
        reference = {a["question_id"]: a["text"] for a in self.read_jsonl("reference")}
        images = self.root / self.options["images"]
        return [
            Sample(
                str(q["question_id"]),
                q["text"],
                str(images / q["image"]),
                {"caption": captions.get(q["image"], ""), "reference": reference[q["question_id"]]},
                q.get("category", ""),
            )
            for q in self.read_jsonl("questions")
        ]

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        if judge is None:
            raise Skipped(NO_JUDGE)
        pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
        unparsed = 0
        for s in samples:
            content = (
                f"[Context]\n{s.target['caption']}\n\n[Question]\n{s.prompt}\n\n"
                f"[Assistant 1]\n{s.target['reference']}\n[End of Assistant 1]\n\n"
                f"[Assistant 2]\n{predictions.get(s.key, '')}\n[End of Assistant 2]"
            )
            scores = first_two_scores(judge.complete(LLAVA_BENCH_INSTRUCTION, content))
            if scores is None:
                unparsed += 1  # LLaVA's script scores an unreadable review as (-1, -1): left out here, counted
                continue
            pairs[s.group].append(scores)
        every = [p for group in pairs.values() for p in group]
        out = {"relative_score": relative(every), "judge_unparsed": float(unparsed)}
        out |= {f"relative_score/{g}": relative(p) for g, p in pairs.items() if g}
        return out


def relative(pairs: list[tuple[float, float]]) -> float:
    reference = sum(p[0] for p in pairs)
    return 100 * sum(p[1] for p in pairs) / reference if reference else float("nan")


class MMVet(Benchmark):
    name = "mmvet"
    title = "MM-Vet"
    metric = "score"
    columns = (Column("score", "MM-Vet", order=11),)
    max_new_tokens = 256
    needs_judge = True
    defaults = {"questions": "mm-vet.json", "images": "images"}

    def samples(self) -> list[Sample]:
        images = self.root / self.options["images"]
        return [
            Sample(
                key,
                q["question"],
                str(images / q["imagename"]),
                {"answer": q["answer"], "capability": q.get("capability", [])},
            )
            for key, q in self.read_json("questions").items()
        ]

    def score(self, samples, predictions, judge=None) -> dict[str, float]:
        if judge is None:
            raise Skipped(NO_JUDGE)
        graded: dict[str, float] = {}
        unparsed = 0
        for s in samples:
            content = f"Question: {s.prompt}\nGround truth: {s.target['answer']}\nAnswer: {predictions.get(s.key, '')}"
            value = grade(judge.complete(MMVET_INSTRUCTION, content))
            if value is None:
                unparsed += 1
                value = 0.0  # an ungradable review counts as wrong, and is counted
            graded[s.key] = value
        out = {"score": 100 * mean(graded.values()), "judge_unparsed": float(unparsed)}
        for capability in sorted({c for s in samples for c in s.target["capability"]}):
            out[f"score/{capability}"] = 100 * mean(
                graded[s.key] for s in samples if capability in s.target["capability"]
            )
        return out
