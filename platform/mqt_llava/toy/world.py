"""A small seeded visual world for the tiny preset, built so that a model has to look at the image
to answer: coloured shapes of two sizes in the cells of a layout whose cells line up with the vision
tower's patches.

- **Aligned cells.** The long side of every image holds `cells` cells (4 by default); the short side
  holds as many (square) or half as many (2:1 and 1:2). LLaVA-1.5 pads an image to a square with its
  mean colour, centred, then resizes it: with these layouts the padding is a whole number of cells
  on each side, so each cell lands on the same whole patches every time (3 x 3 patches of 8 px in a
  96 px tower). `aligned` checks a tower against it.
- **Cells are named as in a spreadsheet** ("B3": column B, row 3), and the toy tokenizer holds each
  name as one token: with two-token names ("B", "3") the tiny LM did not learn to look an object up
  by its cell within 1,400 steps; with one token it did within 900 (docs/ablation/tiny-ablation/pilot).
- **Objects of at least about 1.5 patches**: small ones fill 55 % of a cell, large ones 90 %.
- **Every question kind is askable in every scene** and kinds are drawn evenly: attributes are asked
  by position (colour, shape, size of the object at a cell), position by the object's name,
  occupancy and existence are half yes and half no, counts cover all objects, one colour or one shape.
- **The benchmarks' own answer formats** appear in training: "Please answer yes or no." before the
  short-answer suffix (MME's prompt), lettered options with the option suffix (ScienceQA, MMBench).

Everything is a pure function of (seed, split, index), so the same seed gives byte-identical images
and conversations, and generation can be split across processes.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
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
SIZES: dict[str, float] = {"small": 0.55, "large": 0.9}  # side of the object / side of its cell
BACKGROUND = (245, 245, 240)
CELLS = 4  # cells along an image's long side
LONG_SIDES: tuple[int, ...] = (96, 128, 160, 192)  # pixels; each a multiple of CELLS
MAX_FILL = 0.375  # at most this share of a layout's cells hold an object (6 of 16, 3 of 8)
COLUMN_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_CELLS = len(COLUMN_LETTERS)  # a column's name is one letter
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
YES_NO = "Please answer yes or no."  # MME's own suffix, written before the short-answer one

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
# Whole-image questions, then questions about one cell or one object's place.
COARSE_KINDS = ("existence", "count")
FINE_KINDS = ("colour", "shape", "size", "occupancy", "position")
KINDS = COARSE_KINDS + FINE_KINDS
YES_NO_KINDS = ("existence", "occupancy")


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
    rows: int
    cols: int
    objects: tuple[SceneObject, ...]
    width: int = 128
    height: int = 128

    @property
    def cells(self) -> int:
        """Cells along the long side (the padded square's side, in cells)."""
        return max(self.rows, self.cols)

    def at(self, row: int, col: int) -> SceneObject | None:
        return next((o for o in self.objects if (o.row, o.col) == (row, col)), None)

    def empty_cells(self) -> list[tuple[int, int]]:
        return [(r, c) for r in range(self.rows) for c in range(self.cols) if self.at(r, c) is None]

    def describe(self) -> str:
        """A caption naming every object, each after its cell, in reading order: "A1 small red circle,
        C2 large blue square." (the key first, then what is there: a reader looks the key up)."""
        return ", ".join(f"{cell_name(o.row, o.col)} {o.name}" for o in self.objects) + "."

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Scene:
        """The inverse of to_dict (eval/scenes.jsonl holds scenes as dicts)."""
        objects = tuple(SceneObject(**o) for o in data["objects"])
        return cls(data["rows"], data["cols"], objects, data["width"], data["height"])


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def cell_name(row: int, col: int) -> str:
    """A spreadsheet-style cell name: the column's letter, then the row's number ("B3": column 2,
    row 3). The toy tokenizer holds every name as one token (`cell_names`)."""
    if not (0 <= col < MAX_CELLS and row >= 0):
        raise ValueError(
            f"cell (row {row}, column {col}) has no name: columns are the letters A-Z (at most "
            f"{MAX_CELLS} cells a side)"
        )
    return f"{COLUMN_LETTERS[col]}{row + 1}"


def cell_names(cells: int = CELLS) -> tuple[str, ...]:
    """Every cell name of layouts up to `cells` x `cells`."""
    return tuple(cell_name(r, c) for r in range(cells) for c in range(cells))


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def record_rng(seed: int, split: str, index: int) -> random.Random:
    return random.Random(f"{seed}/{split}/{index}")


def aligned(image_size: int, patch_size: int, cells: int = CELLS) -> bool:
    """Whether every cell covers whole patches of a vision tower (image_size px, patch_size px) after
    LLaVA's pad-to-square and resize: its patch grid must split into `cells` equal, whole parts."""
    patches = image_size // patch_size
    return image_size % patch_size == 0 and patches % cells == 0


def random_scene(seed: int | random.Random, cells: int = CELLS, long_sides: tuple[int, ...] = LONG_SIDES) -> Scene:
    """A square, wide (2:1) or tall (1:2) layout with 1 to MAX_FILL of its cells filled."""
    rng = seed if isinstance(seed, random.Random) else random.Random(seed)
    rows, cols = rng.choice(((cells, cells), (cells // 2, cells), (cells, cells // 2)))
    places = [(r, c) for r in range(rows) for c in range(cols)]
    chosen = rng.sample(places, rng.randint(1, max(1, round(MAX_FILL * len(places)))))
    objects = tuple(
        SceneObject(rng.choice(SHAPES), rng.choice(sorted(COLOURS)), rng.choice(sorted(SIZES)), r, c)
        for r, c in sorted(chosen)
    )
    cell = rng.choice(long_sides) / cells
    return Scene(rows, cols, objects, width=round(cols * cell), height=round(rows * cell))


def render_scene(scene: Scene, width: int | None = None, height: int | None = None) -> Image.Image:
    width, height = width or scene.width, height or scene.height
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell_w, cell_h = width / scene.cols, height / scene.rows
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


# Per-cell attributes over the padded square, for the vision tower's auxiliary head and its probe:
# index 0 is "no object" (an empty cell or padding), then each value in a fixed order.
CELL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("none", *sorted(COLOURS)),
    "shape": ("none", *SHAPES),
    "size": ("none", *sorted(SIZES)),
}


def square_cell_labels(scene: Scene) -> dict[str, list[int]]:
    """For each attribute, one label per cell of the padded square (cells x cells, row-major):
    where LLaVA's centred padding puts each of the scene's cells; `layout` marks the cells that are
    the scene's (1) rather than padding (0)."""
    side = scene.cells
    top, left = (side - scene.rows) // 2, (side - scene.cols) // 2
    labels = {name: [0] * (side * side) for name in CELL_ATTRIBUTES}
    labels["layout"] = [
        int(top <= i // side < top + scene.rows and left <= i % side < left + scene.cols) for i in range(side * side)
    ]
    for o in scene.objects:
        index = (top + o.row) * side + left + o.col
        for name, values in CELL_ATTRIBUTES.items():
            labels[name][index] = values.index(getattr(o, name))
    return labels


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


def absent_object(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A (colour, shape) not in the scene: half the time one sharing a colour or a shape with an
    object that is there (POPE's adversarial negatives), else any."""
    present = {(o.colour, o.shape) for o in scene.objects}
    absent = [(c, s) for c in sorted(COLOURS) for s in SHAPES if (c, s) not in present]
    related = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in present)]
    return rng.choice(related if related and rng.random() < 0.5 else absent)


def ask(scene: Scene, kind: str, rng: random.Random) -> QA | None:
    """One question of `kind` about `scene` with its short answer (None only for a position question
    in a scene where no object is unique by colour and shape, or by size, colour and shape). Word
    answers are the description's own words, lower case as VQAv2 and GQA write them ("red"; cells as
    "B3"), so reading one off the scene is a copy; yes/no answers are "Yes"/"No" as LLaVA's are."""
    objects = scene.objects
    if kind == "existence":
        if rng.random() < 0.5:
            o = rng.choice(objects)
            colour, shape, answer = o.colour, o.shape, "Yes"
        else:
            (colour, shape), answer = absent_object(scene, rng), "No"
        return QA(kind, f"Is there {article(colour)} {colour} {shape} in the image?", answer)
    if kind == "count":
        target = rng.choice(("all", "colour", "shape"))
        if target == "all":
            return QA(kind, "How many objects are there in the image?", str(len(objects)))
        if target == "shape":
            shape = rng.choice(SHAPES)
            return QA(kind, f"How many {plural(shape)} are there?", str(sum(o.shape == shape for o in objects)))
        colour = rng.choice(sorted({o.colour for o in objects}) if rng.random() < 0.75 else sorted(COLOURS))
        return QA(kind, f"How many {colour} objects are there?", str(sum(o.colour == colour for o in objects)))
    if kind in ("colour", "shape", "size"):
        o = rng.choice(objects)
        where = cell_name(o.row, o.col)
        question = {
            "colour": f"What colour is the object at {where}?",
            "shape": f"What shape is the object at {where}?",
            "size": f"Is the object at {where} small or large?",
        }[kind]
        return QA(kind, question, getattr(o, kind))
    if kind == "occupancy":
        empty = scene.empty_cells()
        if empty and rng.random() < 0.5:
            (row, col), answer = rng.choice(empty), "No"
        else:
            o = rng.choice(objects)
            (row, col), answer = (o.row, o.col), "Yes"
        return QA(kind, f"Is there an object at {cell_name(row, col)}?", answer)
    if kind == "position":
        candidates = [o for o in objects if unique(scene, colour=o.colour, shape=o.shape)]
        if candidates:
            o = rng.choice(candidates)
            return QA(kind, f"Where is the {o.colour} {o.shape}?", cell_name(o.row, o.col))
        candidates = [o for o in objects if unique(scene, size=o.size, colour=o.colour, shape=o.shape)]
        if not candidates:
            return None
        o = rng.choice(candidates)
        return QA(kind, f"Where is the {o.name}?", cell_name(o.row, o.col))
    raise ValueError(f"unknown question kind {kind!r}")


def prompt(qa: QA, rng: random.Random | None = None) -> str:
    """The question as training and the toy benchmarks ask it: yes/no questions carry MME's suffix
    half the time (always when `rng` is None), then LLaVA's short-answer suffix."""
    yes_no = qa.kind in YES_NO_KINDS and (rng is None or rng.random() < 0.5)
    return f"{qa.question} {YES_NO}\n{SHORT_ANSWER}" if yes_no else f"{qa.question}\n{SHORT_ANSWER}"


def multiple_choice(scene: Scene, rng: random.Random) -> QA:
    """The shape (3 options) or colour (4 options) of the object at a cell, as lettered options."""
    o = rng.choice(scene.objects)
    if rng.random() < 0.5:
        kind, options = "shape", list(SHAPES)
        question = f"What shape is the object at {cell_name(o.row, o.col)}?"
    else:
        kind, options = "colour", rng.sample([c for c in sorted(COLOURS) if c != o.colour], 3) + [o.colour]
        question = f"What colour is the object at {cell_name(o.row, o.col)}?"
    rng.shuffle(options)
    letters = "ABCD"[: len(options)]
    lines = "\n".join(f"{letter}. {option}" for letter, option in zip(letters, options, strict=True))
    answer = letters[options.index(getattr(o, kind))]
    return QA("multiple_choice", f"{question}\n{lines}\n{OPTION_SUFFIX}", answer)


def detailed_description(scene: Scene) -> str:
    count = len(scene.objects)
    noun = "object" if count == 1 else "objects"
    sentences = [f"The image shows {NUMBER_WORDS[count]} {noun} in {scene.rows} rows and {scene.cols} columns."]
    for o in scene.objects:
        sentences.append(capitalise(f"at {cell_name(o.row, o.col)} there is {article(o.name)} {o.name}."))
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


def draw_questions(
    scene: Scene, rng: random.Random, count: int, next_kind: Callable[[], str], attempts: int
) -> list[QA]:
    """Up to `count` questions about `scene`, each of the kind `next_kind()` draws, in at most
    `attempts` draws (a position question can be unaskable, so this never loops forever)."""
    out: list[QA] = []
    for _ in range(attempts):
        if len(out) == count:
            break
        qa = ask(scene, next_kind(), rng)
        if qa is not None:
            out.append(qa)
    return out


def question_turns(scene: Scene, rng: random.Random, turns: int) -> list[QA]:
    """`turns` questions with kinds drawn evenly (a shuffled round of every kind, then another)."""
    kinds: list[str] = []

    def next_kind() -> str:
        if not kinds:
            kinds.extend(KINDS)
            rng.shuffle(kinds)
        return kinds.pop()

    return draw_questions(scene, rng, turns, next_kind, attempts=turns * 3)


def qa_conversation(questions: list[QA], rng: random.Random, first: str = "<image>\n") -> list[dict[str, str]]:
    turns: list[dict[str, str]] = []
    for i, qa in enumerate(questions):
        text = qa.question if qa.kind == "multiple_choice" else prompt(qa, rng)
        turns += [{"from": "human", "value": (first if i == 0 else "") + text}, {"from": "gpt", "value": qa.answer}]
    return turns


INSTRUCTION_STYLES = {"vqa": 0.82, "multiple_choice": 0.14, "detail": 0.04}


def instruction_conversation(scene: Scene, rng: random.Random) -> tuple[str, list[dict[str, str]]]:
    """(style, conversation) in LLaVA-665K's shapes: dense short answers (4 to 8 turns, kinds drawn
    evenly), lettered multiple choice (1 or 2), or a detailed description (a small share of records,
    so descriptions stay a minority of the supervised words)."""
    style = rng.choices(list(INSTRUCTION_STYLES), weights=list(INSTRUCTION_STYLES.values()))[0]
    if style == "detail":
        return style, [
            {"from": "human", "value": f"<image>\n{rng.choice(DETAIL_INSTRUCTIONS)}"},
            {"from": "gpt", "value": detailed_description(scene)},
        ]
    if style == "multiple_choice":
        return style, qa_conversation([multiple_choice(scene, rng) for _ in range(rng.randint(1, 2))], rng)
    return style, qa_conversation(question_turns(scene, rng, rng.randint(4, 8)), rng)


SCENE_PREFIX = "Scene: "
# Kinds a reading drill asks, relative weights: the presence checks (is a key there at all?) and the
# reverse lookup (where is an object?) are what the LM learns last, so they are asked more.
DRILL_WEIGHTS: dict[str, float] = {
    "existence": 3,
    "count": 1,
    "colour": 1,
    "shape": 1,
    "size": 1,
    "occupancy": 3,
    "position": 3,
}


def scene_reading_conversation(scene: Scene, rng: random.Random) -> list[dict[str, str]]:
    """Text only, for the language model's pretraining: the scene's description in place of the
    image, then questions about it. A model that learns this reads a scene from its description; the
    multimodal stages then only have to turn an image into such a reading."""
    questions = question_turns(scene, rng, rng.randint(3, 7))
    if rng.random() < 0.15:
        questions.append(multiple_choice(scene, rng))
    return qa_conversation(questions, rng, first=f"{SCENE_PREFIX}{scene.describe()}\n")


def reading_drill(
    scene: Scene, rng: random.Random, questions: int = 10, weights: dict[str, float] | None = None
) -> list[QA]:
    """The questions of a reading drill for the language model's pretraining: the scene's description,
    then `questions` bare questions each followed by its answer on the same line, no chat template (the
    toy base-models job writes them; `base_models.drill_samples`). About five times as many supervised
    answers per token as a chat conversation: in the pilot they lifted the LM's text-only reading from
    54 to 64 % (docs/ablation/tiny-ablation/pilot). Kinds are drawn by `weights` (default DRILL_WEIGHTS)."""
    weights = drill_weights(weights)
    kinds, chances = list(weights), list(weights.values())
    return draw_questions(scene, rng, questions, lambda: rng.choices(kinds, weights=chances)[0], questions * 10)


def drill_weights(weights: dict[str, float] | None) -> dict[str, float]:
    """The drills' kind weights (None: DRILL_WEIGHTS), checked: known kinds, one weight above 0."""
    weights = DRILL_WEIGHTS if weights is None else weights
    if set(weights) - set(KINDS) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"drill weights need question kinds among {KINDS} and one above 0, got {weights}")
    return weights
