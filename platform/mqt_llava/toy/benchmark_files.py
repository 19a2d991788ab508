"""Benchmark files in the official formats, made from the synthetic corpus's held-out scenes, so
the real adapters (and the whole sweep) run end to end on a laptop.

    POPE       coco/coco_pope_{random,popular,adversarial}.json + val2014/COCO_val2014_*.jpg
    VQAv2      v2_OpenEnded_mscoco_val2014_questions.json + v2_mscoco_val2014_annotations.json + val2014/
    GQA        testdev_balanced_questions.json + images/<imageId>.jpg
    ScienceQA  problems.json + pid_splits.json + images/test/<pid>/image.png
    MME        MME_Benchmark_release_version/{existence,count,position,color}/<image>.jpg + <image>.txt
    MMBench    mmbench_dev_20230712.tsv (base64 images)

The questions are the corpus's own kinds (toy.world.KINDS), asked in the training data's wording of
scenes no training record used. VQAv2's ten answers per question are the short answer written the
short answer in lower case, as the released annotations hold it, with a dissenting annotator or two
in some questions, so the leave-one-out average matters; the model's answers ("Red", "Yes.") go
through the official normalisation.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mqt_llava.toy.corpus import EVAL_SCENES
from mqt_llava.toy.world import (
    COLOURS,
    KINDS,
    NUMBER_WORDS,
    SHAPES,
    Scene,
    article,
    ask,
    cell_name,
    record_rng,
)

POPE_SPLITS = ("random", "popular", "adversarial")


@dataclass(frozen=True)
class HeldOut:
    index: int
    scene: Scene
    image: Image.Image


def held_out(corpus: Path, limit: int | None) -> list[HeldOut]:
    out = []
    for i, line in enumerate((corpus / EVAL_SCENES).read_text().splitlines()[:limit]):
        record = json.loads(line)
        image = Image.open(corpus / record["image"]).convert("RGB")
        out.append(HeldOut(i, Scene.from_dict(record["scene"]), image))
    return out


def save(image: Image.Image, path: Path, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def names(scene: Scene) -> list[str]:
    return sorted({f"{o.colour} {o.shape}" for o in scene.objects})


def all_names() -> list[str]:
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def write_pope(scenes: list[HeldOut], root: Path, seed: int) -> int:
    """Up to 3 present objects per image (answer yes) and as many absent ones (no): absent ones drawn
    at random, from the most frequent objects (popular), or sharing a colour or shape with a present
    one (adversarial: the co-occurrence analogue)."""
    frequency = Counter(n for h in scenes for n in names(h.scene))
    popular_order = sorted(all_names(), key=lambda n: (-frequency[n], n))
    count = 0
    for split in POPE_SPLITS:
        lines = []
        for h in scenes:
            rng = record_rng(seed, f"pope/{split}", h.index)
            present = names(h.scene)
            positives = rng.sample(present, min(3, len(present)))
            absent = [n for n in all_names() if n not in present]
            if split == "random":
                negatives = rng.sample(absent, min(len(positives), len(absent)))
            elif split == "popular":
                negatives = [n for n in popular_order if n in absent][: len(positives)]
            else:
                related = [n for n in absent if any(p.split()[0] in n or p.split()[1] in n for p in present)]
                rng.shuffle(related)
                negatives = related[: len(positives)]
            image = f"COCO_val2014_{h.index:012d}.jpg"
            for name, label in [(n, "yes") for n in positives] + [(n, "no") for n in negatives]:
                count += 1
                text = f"Is there {article(name)} {name} in the image?"
                lines.append(json.dumps({"question_id": count, "image": image, "text": text, "label": label}))
        (root / "coco").mkdir(parents=True, exist_ok=True)
        (root / "coco" / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")
    for h in scenes:
        save(h.image, root / "val2014" / f"COCO_val2014_{h.index:012d}.jpg")
    return count


def annotator_answers(answer: str, rng: random.Random) -> list[str]:
    """Ten answers as VQAv2's released annotations hold them (lower case, digits for numbers):
    agreement on the short answer, sometimes with one or two dissenting annotators."""
    answers = [answer.lower()] * 10
    for _ in range(rng.choice((0, 0, 1, 2))):
        answers[rng.randrange(10)] = rng.choice(["not sure", "yes", "no", "1", "red", "top"])
    return answers


def write_vqav2(scenes: list[HeldOut], root: Path, seed: int) -> int:
    questions, annotations = [], []
    answer_type = {"existence": "yes/no", "occupancy": "yes/no", "count": "number"}
    for h in scenes:
        rng = record_rng(seed, "vqav2", h.index)
        for kind in KINDS:
            qa = ask(h.scene, kind, rng)
            if qa is None:
                continue
            qid = len(questions) + 1
            questions.append({"image_id": h.index, "question": qa.question, "question_id": qid})
            answers = annotator_answers(qa.answer, rng)
            annotations.append(
                {
                    "question_id": qid,
                    "image_id": h.index,
                    "question_type": qa.question.split()[0].lower(),
                    "answer_type": answer_type.get(kind, "other"),
                    "multiple_choice_answer": qa.answer.lower(),
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)
                    ],
                }
            )
        save(h.image, root / "val2014" / f"COCO_val2014_{h.index:012d}.jpg")
    root.mkdir(parents=True, exist_ok=True)
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": questions}))
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    return len(questions)


def write_gqa(scenes: list[HeldOut], root: Path, seed: int) -> int:
    structural = {"existence": "verify", "occupancy": "verify", "size": "choose"}
    questions = {}
    for h in scenes:
        rng = record_rng(seed, "gqa", h.index)
        image_id = f"n{h.index:06d}"
        for kind in ("colour", "shape", "existence", "occupancy", "position", "size"):
            qa = ask(h.scene, kind, rng)
            if qa is not None:
                questions[f"{len(questions):08d}"] = {
                    "imageId": image_id,
                    "question": qa.question,
                    "answer": qa.answer.lower(),
                    "fullAnswer": f"{qa.answer}.",
                    "types": {"structural": structural.get(kind, "query"), "semantic": kind},
                }
        save(h.image, root / "images" / f"{image_id}.jpg")
    root.mkdir(parents=True, exist_ok=True)
    (root / "testdev_balanced_questions.json").write_text(json.dumps(questions))
    return len(questions)


def shape_question(scene: Scene, rng: random.Random) -> tuple[str, list[str], int]:
    """The shape of the object at a cell: the question, the 3 shapes shuffled, the answer's index."""
    o = rng.choice(scene.objects)
    shapes = list(SHAPES)
    rng.shuffle(shapes)
    return f"What shape is the object at {cell_name(o.row, o.col)}?", shapes, shapes.index(o.shape)


def colour_question(scene: Scene, rng: random.Random) -> tuple[str, list[str], int]:
    """The colour of the object at a cell, among 4 colours."""
    target = rng.choice(scene.objects)
    colours = rng.sample([c for c in sorted(COLOURS) if c != target.colour], 3) + [target.colour]
    rng.shuffle(colours)
    return f"What colour is the object at {cell_name(target.row, target.col)}?", colours, colours.index(target.colour)


def write_scienceqa(scenes: list[HeldOut], root: Path, seed: int) -> int:
    """Per scene: the shape (3 choices) and the colour (4) of the object at a cell;
    plus text-only problems, which the IMG subset leaves out."""
    problems, test = {}, []

    def add(question, choices, answer, image, hint=""):
        pid = str(len(problems) + 1)
        problems[pid] = {
            "question": question,
            "choices": choices,
            "answer": answer,
            "hint": hint,
            "image": "image.png" if image is not None else None,
            "split": "test",
            "subject": "natural science",
            "grade": "grade1",
        }
        test.append(pid)
        if image is not None:
            save(image, root / "images" / "test" / pid / "image.png", "PNG")

    for h in scenes:
        rng = record_rng(seed, "scienceqa", h.index)
        add(*shape_question(h.scene, rng), h.image, hint="The image shows shapes on a grid.")
        add(*colour_question(h.scene, rng), h.image)
        if h.index % 5 == 0:
            add("How many sides does a triangle have?", ["three", "four"], 0, None)
    root.mkdir(parents=True, exist_ok=True)
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"train": [], "val": [], "test": test}))
    return sum(problems[p]["image"] is not None for p in test)


def write_mme(scenes: list[HeldOut], root: Path, seed: int) -> int:
    """Four perception subtasks, two questions per image: one answered Yes, one No (MME's design)."""
    release = root / "MME_Benchmark_release_version"
    suffix = " Please answer yes or no."
    count = 0
    for h in scenes:
        rng = record_rng(seed, "mme", h.index)
        scene = h.scene
        present, absent = names(scene), [n for n in all_names() if n not in names(scene)]
        pairs = {}
        if absent:
            yes, no = rng.choice(present), rng.choice(absent)
            pairs["existence"] = (
                f"Is there {article(yes)} {yes} in this image?",
                f"Is there {article(no)} {no} in this image?",
            )
        n = len(scene.objects)
        wrong = n + rng.choice([-1, 1]) if n > 1 else n + 1
        pairs["count"] = (
            f"Are there {NUMBER_WORDS[n]} objects in this image?",
            f"Are there {NUMBER_WORDS[wrong]} objects in this image?",
        )
        distinct = [
            o for o in scene.objects if sum((x.colour, x.shape) == (o.colour, o.shape) for x in scene.objects) == 1
        ]
        if distinct:
            o = rng.choice(distinct)
            cells = [(r, c) for r in range(scene.rows) for c in range(scene.cols) if (r, c) != (o.row, o.col)]
            r, c = rng.choice(cells)
            pairs["position"] = (
                f"Is the {o.colour} {o.shape} at {cell_name(o.row, o.col)}?",
                f"Is the {o.colour} {o.shape} at {cell_name(r, c)}?",
            )
        o = rng.choice(scene.objects)
        other = rng.choice([c for c in sorted(COLOURS) if c != o.colour])
        where = cell_name(o.row, o.col)
        pairs["color"] = (f"Is the object at {where} {o.colour}?", f"Is the object at {where} {other}?")
        for subtask, (yes_q, no_q) in pairs.items():
            stem = f"{h.index:06d}"
            save(h.image, release / subtask / f"{stem}.jpg")
            (release / subtask / f"{stem}.txt").write_text(f"{yes_q}{suffix}\tYes\n{no_q}{suffix}\tNo\n")
            count += 2
    return count


def write_mmbench(scenes: list[HeldOut], root: Path, seed: int) -> int:
    columns = [
        "index",
        "question",
        "hint",
        "A",
        "B",
        "C",
        "D",
        "answer",
        "category",
        "image",
        "source",
        "l2-category",
        "comment",
        "split",
    ]
    rows = []
    for h in scenes:
        rng = record_rng(seed, "mmbench", h.index)
        buffer = io.BytesIO()
        h.image.save(buffer, format="JPEG", quality=95)
        encoded = base64.b64encode(buffer.getvalue()).decode()
        question, shapes, answer = shape_question(h.scene, rng)
        rows.append([question, "", *shapes, "", "ABC"[answer], "object_localization", encoded])
        question, colours, answer = colour_question(h.scene, rng)
        hint = "The shapes are drawn on a plain background."
        rows.append([question, hint, *colours, "ABCD"[answer], "attribute_recognition", encoded])
    root.mkdir(parents=True, exist_ok=True)
    with (root / "mmbench_dev_20230712.tsv").open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(columns)
        for i, row in enumerate(rows):
            writer.writerow([i, *row, "synthetic", "perception", "", "dev"])
    return len(rows)


WRITERS = {
    "pope": write_pope,
    "vqav2": write_vqav2,
    "gqa": write_gqa,
    "scienceqa": write_scienceqa,
    "mme": write_mme,
    "mmbench": write_mmbench,
}


def write_synthetic_benchmarks(corpus: str | Path, out: str | Path, limit: int | None = None, seed: int = 0) -> dict:
    """Every synthetic benchmark under `out/<name>/`, from the first `limit` held-out scenes;
    returns the number of questions written per benchmark."""
    scenes = held_out(Path(corpus), limit)
    if not scenes:
        raise ValueError(f"{corpus} has no held-out scenes ({EVAL_SCENES})")
    out = Path(out)
    counts = {name: write(scenes, out / name, seed) for name, write in WRITERS.items()}
    (out / "synthetic.json").write_text(
        json.dumps({"scenes": len(scenes), "seed": seed, "questions": counts}, indent=1)
    )
    return counts
