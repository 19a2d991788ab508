"""The toy world's promises: cells land on whole patches after LLaVA's preprocessing whatever the
aspect ratio, objects span at least about 1.5 patches, every kind is askable and drawn evenly,
yes/no answers are balanced, descriptions are a small share of supervised words, the benchmarks'
answer formats appear in training, and everything is a function of the seed."""

import random
import re
from collections import Counter

import numpy as np
import pytest

from mqt_llava.data.conversation import OPTION_SUFFIX, SHORT_ANSWER
from mqt_llava.data.images import preprocess_image
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.toy import world
from mqt_llava.toy.world import KINDS, YES_NO, Scene, SceneObject, aligned, ask, random_scene, record_rng

SCENES = [random_scene(record_rng(0, "test", i)) for i in range(400)]


def test_layouts_are_square_wide_or_tall_with_cells_of_whole_pixels():
    layouts = Counter((s.rows, s.cols) for s in SCENES)
    assert set(layouts) == {(4, 4), (2, 4), (4, 2)}
    for s in SCENES:
        assert s.width / s.cols == s.height / s.rows == int(s.width / s.cols)
        assert 1 <= len(s.objects) <= round(world.MAX_FILL * s.rows * s.cols)


@pytest.mark.parametrize("layout", [(4, 4), (2, 4), (4, 2)])
def test_each_cell_lands_on_the_same_whole_patches_after_padding_and_resizing(layout):
    """One large object per cell in turn: after pad-to-square and resize to 96 px (12 x 12 patches of
    8 px), its colour fills the centre of exactly the 3 x 3 patches the cell maps to, and nothing
    of it reaches another cell's patches."""
    rows, cols = layout
    settings = ImageSettings.square_of(96)
    assert aligned(96, 8) and not aligned(64, 8, cells=3)
    top, left = (4 - rows) // 2, (4 - cols) // 2
    for row in range(rows):
        for col in range(cols):
            scene = Scene(rows, cols, (SceneObject("square", "red", "large", row, col),), 40 * cols, 40 * rows)
            pixels = preprocess_image(world.render_scene(scene), settings, "pad").astype(int)  # (3, 96, 96)
            red = (pixels[0] > 180) & (pixels[1] < 90)
            cell = np.zeros((96, 96), bool)
            cell[(top + row) * 24 : (top + row + 1) * 24, (left + col) * 24 : (left + col + 1) * 24] = True
            assert red[cell].mean() > 0.7  # a large square fills 90 % of its cell's side
            assert not red[~cell].any()


def test_small_objects_span_at_least_one_and_a_half_patches():
    cell_px = 96 / 4
    assert world.SIZES["small"] * cell_px >= 1.5 * 8 * 0.95  # 13.2 px of 8 px patches


def test_every_kind_is_askable_in_every_scene():
    unaskable = Counter()
    for i, scene in enumerate(SCENES):
        rng = record_rng(0, "ask", i)
        for kind in KINDS:
            qa = ask(scene, kind, rng)
            if qa is None:
                unaskable[kind] += 1
            else:
                assert qa.answer
    assert set(unaskable) <= {"position"} and unaskable["position"] <= 0.01 * len(SCENES)


def test_yes_no_kinds_are_balanced():
    for kind in world.YES_NO_KINDS:
        answers = Counter(ask(s, kind, record_rng(0, kind, i)).answer for i, s in enumerate(SCENES))
        assert set(answers) == {"Yes", "No"}
        assert 0.4 < answers["Yes"] / len(SCENES) < 0.6, answers


def test_kinds_are_drawn_evenly_and_descriptions_are_a_small_share_of_supervised_words():
    kinds, styles, words = Counter(), Counter(), Counter()
    for i in range(1500):
        rng = record_rng(0, "instruct", i)
        scene = random_scene(rng)
        style, conversation = world.instruction_conversation(scene, rng)
        styles[style] += 1
        for turn in conversation:
            if turn["from"] == "gpt":
                words[style] += len(turn["value"].split())
    for i in range(600):
        for qa in world.question_turns(SCENES[i % len(SCENES)], record_rng(0, "turns", i), 7):
            kinds[qa.kind] += 1
    counts = [kinds[k] for k in KINDS]
    assert min(counts) > 0.8 * max(counts), dict(zip(KINDS, counts, strict=True))
    assert words["detail"] / sum(words.values()) < 0.25
    assert styles["multiple_choice"] > 0.08 * sum(styles.values())


def test_training_carries_the_benchmarks_answer_formats():
    text = "\n".join(
        turn["value"]
        for i in range(300)
        for turn in world.instruction_conversation(random_scene(record_rng(0, "fmt", i)), record_rng(0, "fmt", i))[1]
    )
    assert f"{YES_NO}\n{SHORT_ANSWER}" in text  # MME's prompt as the toy benchmarks send it
    assert f"?\n{SHORT_ANSWER}" in text  # POPE's and VQA's
    assert OPTION_SUFFIX in text and "\nA. " in text and "\nD. " in text  # lettered options, 3 and 4


def test_scene_reading_conversations_put_the_description_first_and_answer_from_it():
    scene = SCENES[5]
    conversation = world.scene_reading_conversation(scene, record_rng(0, "read", 5))
    assert conversation[0]["value"].startswith(f"{world.SCENE_PREFIX}{scene.describe()}\n")
    assert all("<image>" not in turn["value"] for turn in conversation)
    assert len(conversation) >= 6 and conversation[1]["from"] == "gpt"


def test_reading_drills_ask_kinds_by_their_weights_and_answer_from_the_scene():
    rng = record_rng(0, "drill", 0)
    drills = [(scene, world.reading_drill(scene, rng)) for scene in SCENES]
    assert all(len(questions) == 10 for _, questions in drills)
    kinds = Counter(qa.kind for _, questions in drills for qa in questions)
    weights = world.DRILL_WEIGHTS
    for kind in KINDS:  # 4,000 draws: each kind's share within 3 points of its weight's (position can be unaskable)
        assert abs(kinds[kind] / kinds.total() - weights[kind] / sum(weights.values())) < 0.03, kinds
    for scene, questions in drills[:50]:  # every answer is the one `ask` gives for that question
        for qa in questions:
            if qa.kind in ("colour", "shape", "size"):
                cell = re.search(r"at ([A-Z][0-9]+)", qa.question).group(1)
                assert qa.answer == next(
                    getattr(o, qa.kind) for o in scene.objects if world.cell_name(o.row, o.col) == cell
                )
    only = world.reading_drill(SCENES[0], record_rng(0, "drill", 1), 6, {"occupancy": 1})
    assert {qa.kind for qa in only} == {"occupancy"} and len(only) == 6
    for bad in ({"colour": 1, "weather": 1}, {"colour": 0}):
        with pytest.raises(ValueError, match="drill weights"):
            world.reading_drill(SCENES[0], rng, 3, bad)


def test_descriptions_name_each_cell_before_what_is_in_it():
    scene = world.Scene(
        4, 4, (world.SceneObject("circle", "red", "small", 0, 0), world.SceneObject("square", "blue", "large", 2, 1))
    )
    assert scene.describe() == "A1 small red circle, B3 large blue square."
    assert world.cell_name(2, 1) == "B3" and len(set(world.cell_names())) == world.CELLS**2
    assert world.cell_name(0, 25) == "Z1"
    with pytest.raises(ValueError, match="at most 26 cells a side"):
        world.cell_name(0, 26)  # a column past Z has no one-letter name
    questions = {qa.question: qa.answer for qa in (world.ask(scene, "position", random.Random(i)) for i in range(20))}
    assert questions["Where is the blue square?"] == "B3"


def test_cell_labels_follow_the_padding():
    scene = Scene(2, 4, (SceneObject("circle", "blue", "small", 0, 3),), 160, 80)  # wide: rows 1-2 of 4
    labels = world.square_cell_labels(scene)
    index = 1 * 4 + 3
    assert labels["shape"][index] == world.CELL_ATTRIBUTES["shape"].index("circle")
    assert labels["colour"][index] == world.CELL_ATTRIBUTES["colour"].index("blue")
    assert sum(v > 0 for v in labels["size"]) == 1
    assert labels["layout"] == [0] * 4 + [1] * 8 + [0] * 4


def test_same_seed_same_world():
    again = [random_scene(record_rng(0, "test", i)) for i in range(400)]
    assert again == SCENES
    a = world.instruction_conversation(SCENES[0], record_rng(1, "x", 0))
    assert a == world.instruction_conversation(SCENES[0], record_rng(1, "x", 0))
    assert random_scene(record_rng(1, "test", 0)) != SCENES[0] or random_scene(record_rng(1, "test", 1)) != SCENES[1]
