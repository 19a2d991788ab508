"""A small LLaVA-format corpus of real odd files that must be accepted and real bad files and
records that must be rejected, each with the reason expected."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mqt_llava.data.llava_format import RecordRules

MAX_PIXELS = 50_000
RULES = RecordRules("vicuna_v1", max_length=512, visual_tokens=8, max_pixels=MAX_PIXELS)


@dataclass
class OddCorpus:
    json_path: Path
    image_root: Path
    accepted: dict[str, str | None]  # id -> image path (None: text-only)
    rejected: dict[str, str]  # id -> reason


def noise(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def qa(question="<image>\nWhat is shown?", answer="Shapes."):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def write_odd_corpus(root: Path) -> OddCorpus:
    images = root / "images"
    images.mkdir(parents=True)
    rgba = noise(40, 30, "RGBA")
    rgba.putalpha(128)
    files = {
        "alpha.png": save(rgba, "PNG"),
        "cmyk.jpg": save(noise(30, 40, "CMYK"), "JPEG"),
        "gif_named.jpg": save(noise(24, 24, "P"), "GIF"),
        "gray.png": save(noise(32, 20, "L"), "PNG"),
        "palette.png": save(noise(20, 32, "P"), "PNG"),
        "plain.jpg": save(noise(50, 50), "JPEG"),
        "truncated.jpg": save(noise(96, 96, seed=3), "JPEG", quality=95)[:1500],
        "huge.png": save(Image.new("RGB", (300, 200), (9, 9, 9)), "PNG"),  # 60,000 px > MAX_PIXELS
        "not_an_image.jpg": b"GIF89a but not really",
    }
    for name, data in files.items():
        (images / name).write_bytes(data)

    accepted = {
        "alpha": "alpha.png",
        "cmyk": "cmyk.jpg",
        "gif": "gif_named.jpg",
        "gray": "gray.png",
        "palette": "palette.png",
        "12345": "plain.jpg",
        "text-only": None,
    }
    records = [
        {
            "id": rid,
            **({"image": path} if path else {}),
            "conversations": qa() if path else qa("Name a shape."),
        }
        for rid, path in accepted.items()
    ]
    records[list(accepted).index("12345")]["id"] = 12345  # ids are ints in the wild
    rejected = {
        "truncated": "undecodable_image",
        "garbage": "undecodable_image",
        "huge": "image_too_large",
        "missing": "missing_image_file",
        "no-answer": "no_assistant_turn",
        "empty": "empty_text",
        "image-in-text-only": "image_placeholder_mismatch",
        "no-image-tag": "image_placeholder_mismatch",
        "too-long": "sequence_too_long",
        "not-a-conversation": "malformed_record",
        "robot": "bad_role",
    }
    records += [
        {"id": "truncated", "image": "truncated.jpg", "conversations": qa()},
        {"id": "garbage", "image": "not_an_image.jpg", "conversations": qa()},
        {"id": "huge", "image": "huge.png", "conversations": qa()},
        {"id": "missing", "image": "nowhere/missing.jpg", "conversations": qa()},
        {"id": "no-answer", "image": "plain.jpg", "conversations": qa()[:1]},
        {"id": "empty", "conversations": qa("Say something.", "   ")},
        {"id": "image-in-text-only", "conversations": qa()},
        {"id": "no-image-tag", "image": "plain.jpg", "conversations": qa("What is shown?")},
        {"id": "too-long", "image": "plain.jpg", "conversations": qa("<image>\n" + "why? " * 200)},
        {"id": "not-a-conversation", "conversations": "hello"},
        {
            "id": "robot",
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "Hi"}],
        },
    ]
    json_path = root / "data.json"
    json_path.write_text(json.dumps(records))
    return OddCorpus(json_path, images, accepted, rejected)
