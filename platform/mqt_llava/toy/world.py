"""A small seeded visual world for the tiny preset: coloured shapes of two sizes on an n x n layout.

Everything is a pure function of (seed, split, index), so the same seed gives byte-identical images
and conversations, and generation can be split across processes.

Questions run from coarse to fine-grained, so that more visual tokens should help the fine ones
more: colour and existence (coarse: one glance at the image) to counting, position, size and
cell contents (fine: every object and its place must survive compression).
"""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass

from PIL import Image, ImageDraw

from mqt_llava.data.conversation import OPTION_SUFFIX, SHORT_ANSWER

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (240, 140, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.4, "large": 0.8}  # fraction of the cell
ASPECTS: tuple[tuple[int, int], ...] = ((1, 1), (4, 3), (3, 4), (16, 9), (9, 16), (2, 1))
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# LLaVA's brief-caption instructions (the 558K set's human turns).
CAPTION_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
DETAIL_INSTRUCTIONS = (
    "Describe the image in detail.",
    "What do you see in this image? Describe every object.",
    "Give a detailed description of the picture.",
)
COARSE_KINDS = ("colour", "existence")
FINE_KINDS = ("count", "position", "size", "cell")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    row: int
    col: int

    @property
    def name(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    grid: int
    objects: tuple[SceneObject, ...]
    width: int = 128
    height: int = 128

    def at(self, row: int, col: int) -> SceneObject | None:
        return next((o for o in self.objects if (o.row, o.col) == (row, col)), None)

    def describe(self) -> str:
        """A caption naming every object and its cell, in reading order."""
        parts = [f"{article(o.name)} {o.name} {cell_phrase(o.row, o.col, self.grid)}" for o in self.objects]
        return capitalise(join_words(parts)) + "."

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        """The inverse of to_dict (eval/scenes.jsonl holds scenes as dicts)."""
        objects = tuple(SceneObject(**o) for o in data["objects"])
        return cls(data["grid"], objects, data["width"], data["height"])


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def join_words(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def cell_name(row: int, col: int, grid: int) -> str:
    """'top left' ... 'bottom right' on a 3x3 layout, 'row r, column c' on others."""
    if grid == 3:
        vertical, horizontal = ("top", "middle", "bottom")[row], ("left", "center", "right")[col]
        if (vertical, horizontal) == ("middle", "center"):
            return "center"
        return (
            horizontal if vertical == "middle" else (vertical if horizontal == "center" else f"{vertical} {horizontal}")
        )
    return f"row {row + 1}, column {col + 1}"


def cell_phrase(row: int, col: int, grid: int) -> str:
    name = cell_name(row, col, grid)
    if grid != 3:
        return f"at {name}"
    return {
        "left": "on the left",
        "right": "on the right",
        "top": "at the top",
        "bottom": "at the bottom",
    }.get(name, f"in the {name}")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def record_rng(seed: int, split: str, index: int) -> random.Random:
    return random.Random(f"{seed}/{split}/{index}")


def random_scene(seed: int | random.Random, grid: int = 3, max_objects: int = 4, sizes=(128, 192)) -> Scene:
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    cells = rng.sample([(r, c) for r in range(grid) for c in range(grid)], rng.randint(1, max_objects))
    objects = tuple(
        SceneObject(rng.choice(SHAPES), rng.choice(sorted(COLOURS)), rng.choice(sorted(SIZES)), r, c)
        for r, c in sorted(cells)
    )
    aspect_w, aspect_h = rng.choice(ASPECTS)
    long_side = rng.randint(*sizes)
    scale = long_side / max(aspect_w, aspect_h)
    return Scene(grid, objects, width=round(aspect_w * scale), height=round(aspect_h * scale))


def render_scene(scene: Scene, width: int | None = None, height: int | None = None) -> Image.Image:
    width, height = width or scene.width, height or scene.height
    image = Image.new("RGB", (width, height), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    cell_w, cell_h = width / scene.grid, height / scene.grid
    for o in scene.objects:
        centre_x, centre_y = (o.col + 0.5) * cell_w, (o.row + 0.5) * cell_h
        half = SIZES[o.size] * min(cell_w, cell_h) / 2
        box = (centre_x - half, centre_y - half, centre_x + half, centre_y + half)
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(centre_x, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    return image


def encode_image(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


# --- questions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QA:
    kind: str
    question: str
    answer: str


def plural(shape: str) -> str:
    return shape + "s"


def unique(scene: Scene, **attrs) -> SceneObject | None:
    matches = [o for o in scene.objects if all(getattr(o, k) == v for k, v in attrs.items())]
    return matches[0] if len(matches) == 1 else None


def ask(scene: Scene, kind: str, rng: random.Random) -> QA | None:
    """One question of `kind` about `scene` with its short answer, or None if this scene cannot
    pose it unambiguously."""
    objects = scene.objects
    if kind == "colour":
        o = rng.choice(objects)
        if unique(scene, shape=o.shape) is None:
            return None
        return QA(kind, f"What colour is the {o.shape}?", capitalise(o.colour))
    if kind == "existence":
        if rng.random() < 0.5:
            o = rng.choice(objects)
            return QA(kind, f"Is there {article(o.colour)} {o.colour} {o.shape} in the image?", "Yes")
        present = {(o.colour, o.shape) for o in objects}
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        if not absent:
            return None
        colour, shape = rng.choice(absent)
        return QA(kind, f"Is there {article(colour)} {colour} {shape} in the image?", "No")
    if kind == "count":
        target = rng.choice(("shape", "colour", "all"))
        if target == "all":
            return QA(kind, "How many objects are there in the image?", str(len(objects)))
        if target == "shape":
            shape = rng.choice(SHAPES)
            return QA(kind, f"How many {plural(shape)} are there?", str(sum(o.shape == shape for o in objects)))
        colour = rng.choice(sorted({o.colour for o in objects}))
        return QA(kind, f"How many {colour} objects are there?", str(sum(o.colour == colour for o in objects)))
    if kind == "position":
        o = rng.choice(objects)
        if unique(scene, shape=o.shape, colour=o.colour) is None:
            return None
        return QA(kind, f"Where is the {o.colour} {o.shape}?", capitalise(cell_name(o.row, o.col, scene.grid)))
    if kind == "size":
        o = rng.choice(objects)
        if unique(scene, shape=o.shape, colour=o.colour) is None:
            return None
        return QA(kind, f"Is the {o.colour} {o.shape} small or large?", capitalise(o.size))
    if kind == "cell":
        row, col = rng.randrange(scene.grid), rng.randrange(scene.grid)
        o = scene.at(row, col)
        answer = capitalise(f"{o.colour} {o.shape}") if o else "Nothing"
        return QA(kind, f"What is in the {cell_name(row, col, scene.grid)} cell?", answer)
    raise ValueError(f"unknown question kind {kind!r}")


def multiple_choice(scene: Scene, rng: random.Random) -> QA:
    o = rng.choice(scene.objects)
    options = list(SHAPES)
    rng.shuffle(options)
    letters = "ABC"
    lines = "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options, strict=True))
    question = f"What shape is in the {cell_name(o.row, o.col, scene.grid)} cell?\n{lines}\n{OPTION_SUFFIX}"
    return QA("multiple_choice", question, letters[options.index(o.shape)])


def detailed_description(scene: Scene) -> str:
    count = len(scene.objects)
    noun = "object" if count == 1 else "objects"
    sentences = [f"The image shows {NUMBER_WORDS[count]} {noun} on a {scene.grid} by {scene.grid} layout."]
    for o in scene.objects:
        sentences.append(capitalise(f"{cell_phrase(o.row, o.col, scene.grid)} there is {article(o.name)} {o.name}."))
    return " ".join(sentences)


TEXT_ONLY_FACTS = (
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("How many sides does a square have?", "A square has four sides."),
    ("Does a circle have corners?", "No, a circle has no corners."),
    ("What colour do you get when you mix blue and yellow?", "Mixing blue and yellow gives green."),
    ("What colour do you get when you mix red and yellow?", "Mixing red and yellow gives orange."),
    ("What colour do you get when you mix red and blue?", "Mixing red and blue gives purple."),
    ("Which is bigger, a large square or a small square?", "A large square is bigger."),
    ("Name the three shapes in this world.", "Circle, square and triangle."),
)


def text_only_conversation(rng: random.Random) -> list[dict[str, str]]:
    turns = []
    for question, answer in rng.sample(TEXT_ONLY_FACTS, rng.randint(1, 3)):
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return turns


def caption_conversation(scene: Scene, rng: random.Random) -> list[dict[str, str]]:
    instruction = rng.choice(CAPTION_INSTRUCTIONS)
    # The 558K set puts <image> both before and after the instruction.
    human = f"{instruction}\n<image>" if rng.random() < 0.5 else f"<image>\n{instruction}"
    return [{"from": "human", "value": human}, {"from": "gpt", "value": scene.describe()}]


def instruction_conversation(scene: Scene, rng: random.Random) -> tuple[str, list[dict[str, str]]]:
    """(type, conversation) in LLaVA-665K's shapes: multi-turn short answers, a lettered multiple
    choice, or a detailed description."""
    style = rng.choices(("vqa", "multiple_choice", "detail"), weights=(6, 2, 2))[0]
    if style == "detail":
        return style, [
            {"from": "human", "value": f"<image>\n{rng.choice(DETAIL_INSTRUCTIONS)}"},
            {"from": "gpt", "value": detailed_description(scene)},
        ]
    if style == "multiple_choice":
        qa = multiple_choice(scene, rng)
        return style, [
            {"from": "human", "value": f"<image>\n{qa.question}"},
            {"from": "gpt", "value": qa.answer},
        ]
    turns: list[dict[str, str]] = []
    wanted = rng.randint(2, 5)
    for _ in range(wanted * 4):
        if len(turns) // 2 == wanted:
            break
        qa = ask(scene, rng.choice(COARSE_KINDS + FINE_KINDS), rng)
        if qa is None:
            continue
        prefix = "<image>\n" if not turns else ""
        turns += [
            {"from": "human", "value": f"{prefix}{qa.question}\n{SHORT_ANSWER}"},
            {"from": "gpt", "value": qa.answer},
        ]
    if not turns:  # every draw was ambiguous: fall back to a question any scene can pose
        qa = ask(scene, "count", rng)
        question = f"<image>\n{qa.question}\n{SHORT_ANSWER}"
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": qa.answer}]
    return style, turns
