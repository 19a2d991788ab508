"""A small seeded visual world: coloured shapes on an n x n layout.

Deterministic: the same seed gives the same scene and the same pixels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (240, 140, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    grid: int
    objects: tuple[SceneObject, ...]

    def describe(self) -> str:
        parts = [f"a {o.colour} {o.shape} at row {o.row + 1}, column {o.col + 1}" for o in self.objects]
        return "There is " + "; ".join(parts) + "."


def random_scene(seed: int, grid: int = 3, max_objects: int = 4) -> Scene:
    rng = random.Random(seed)
    cells = rng.sample([(r, c) for r in range(grid) for c in range(grid)], rng.randint(1, max_objects))
    objects = tuple(
        SceneObject(rng.choice(SHAPES), rng.choice(sorted(COLOURS)), r, c) for r, c in sorted(cells)
    )
    return Scene(grid, objects)


def render_scene(
    scene: Scene, width: int = 128, height: int = 128, background=(245, 245, 240)
) -> Image.Image:
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    cell_w, cell_h = width / scene.grid, height / scene.grid
    for o in scene.objects:
        x0, y0 = o.col * cell_w, o.row * cell_h
        box = (x0 + 0.15 * cell_w, y0 + 0.15 * cell_h, x0 + 0.85 * cell_w, y0 + 0.85 * cell_h)
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    return image
