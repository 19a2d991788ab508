"""LLaVA's published data formats, read as a stream, and the per-record checks that decide what
becomes a training sample.

`blip_laion_cc_sbu_558k.json` (images under `LLaVA-Pretrain/images/`) and
`llava_v1_5_mix665k.json` (images under `coco/train2017`, `gqa/images`, ...) are one JSON array
each, of records `{"id", "image"?, "conversations": [{"from", "value"}]}`; `image` is relative to
one image root, `id` is a string or an int in the wild, and about 40K of 665K records have no image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ijson

from mqt_llava.data.conversation import MalformedConversation, build_sample
from mqt_llava.data.images import DEFAULT_MAX_PIXELS, ImageError, decode_image
from mqt_llava.model.storage import resolve_location

REJECT_REASONS: tuple[str, ...] = (
    "malformed_record",
    "missing_image_file",
    "undecodable_image",
    "image_too_large",
    "no_assistant_turn",
    "empty_text",
    "image_placeholder_mismatch",
    "bad_role",
    "sequence_too_long",
)


def open_input(path: str):
    """A binary input stream for a local path or any pyarrow filesystem URI."""
    filesystem, resolved = resolve_location(path)
    return filesystem.open_input_stream(resolved)


def iter_json_records(path: str) -> Iterator[dict[str, Any]]:
    """Records of a LLaVA JSON array, one at a time: memory does not grow with the file."""
    with open_input(path) as stream:
        yield from ijson.items(stream, "item")


class CountingReader:
    """A read-only stream that counts the bytes handed out (pyarrow streams cannot tell())."""

    def __init__(self, stream) -> None:
        self.stream, self.consumed = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.consumed += len(data)
        return data


def iter_json_records_with_progress(path: str) -> Iterator[tuple[dict[str, Any], int]]:
    """Like iter_json_records, with the bytes of the file read so far (for progress and ETA)."""
    with open_input(path) as stream:
        reader = CountingReader(stream)
        for record in ijson.items(reader, "item"):
            yield record, reader.consumed


def json_size(path: str) -> int:
    filesystem, resolved = resolve_location(path)
    return filesystem.get_file_info(resolved).size


@dataclass(frozen=True)
class Rejected:
    id: str
    reason: str
    message: str


@dataclass(frozen=True)
class RecordRules:
    """What a record must satisfy: its conversation must render with `template` and fit
    `max_length` with the image as `visual_tokens` tokens; its image must decode within
    `max_pixels`."""

    template: str
    max_length: int
    visual_tokens: int
    max_pixels: int = DEFAULT_MAX_PIXELS


def record_id(record: Any, position: int) -> str:
    if isinstance(record, dict) and record.get("id") is not None:
        return str(record["id"])
    return f"<record {position}>"


def check_record(record: Any, position: int, image_root: str | None, tokenizer, rules: RecordRules) -> dict | Rejected:
    """One LLaVA record -> a row of the shard format (mqt_llava.data.shards.SHARD_SCHEMA), or the
    reason it cannot be one."""
    rid = record_id(record, position)
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        return Rejected(rid, "malformed_record", "not an object with a `conversations` list")
    if not all(isinstance(turn, dict) for turn in record["conversations"]):
        return Rejected(rid, "malformed_record", "a turn is not an object")
    image_path = record.get("image")
    if image_path is not None and not isinstance(image_path, str):
        return Rejected(rid, "malformed_record", "`image` is not a path")
    has_image = image_path is not None
    conversations = [{"from": t.get("from"), "value": t.get("value")} for t in record["conversations"]]
    try:
        sample = build_sample(
            conversations, rules.template, tokenizer, has_image, rules.max_length, rules.visual_tokens
        )
    except MalformedConversation as exc:
        return Rejected(rid, exc.reason, str(exc))

    row = dict(
        id=rid,
        image_path=image_path,
        image=None,
        conversations=conversations,
        num_tokens=len(sample.input_ids),
        width=None,
        height=None,
    )
    if has_image:
        if image_root is None:
            return Rejected(rid, "missing_image_file", f"{image_path}: no image root given")
        file = Path(image_root) / image_path
        try:
            data = file.read_bytes()
        except OSError as exc:
            return Rejected(rid, "missing_image_file", f"{file}: {exc.strerror or exc}")
        try:
            image = decode_image(data, rules.max_pixels)
        except ImageError as exc:
            return Rejected(rid, exc.reason, f"{image_path}: {exc}")
        row.update(image=data, width=image.width, height=image.height)
    return row
