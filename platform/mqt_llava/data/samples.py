"""Training samples without Ray and without torch: the per-batch transforms every pipeline applies
(template + tokenize, image decode) and modality grouping. The Ray Data pipeline
(mqt_llava.data.datasets) maps the transforms over a cluster; a run under torchrun (no Ray) applies
them in-process (mqt_llava.data.batches.LocalShard).

This module and what it imports stay free of torch and of transformers' model code: the Ray Data
processes (tokenize tasks, decode actors, the split coordinator) import it, and each of them pays
every import on the critical path of a run's first batch. tests/test_light_imports.py holds it
to that.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import numpy as np

from mqt_llava.data.conversation import MalformedConversation, build_sample
from mqt_llava.data.images import ASPECTS, DEFAULT_MAX_PIXELS, ImageError, decode_image, preprocess_image
from mqt_llava.data.llava_format import RecordRules
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.tokenizer import TokenizerSpec, cached_tokenizer

log = logging.getLogger(__name__)
MODEL_COLUMNS = ("id", "input_ids", "labels", "pixel_values", "has_image", "length")


class DecodeImages:
    """A batch UDF (a Ray Data actor, or in-process): image bytes -> (3, H, W) uint8, LLaVA's
    pad-to-square + resize. Text-only rows get
    a zero image (has_image=False) so every batch has one fixed-shape tensor column; the collate
    drops them."""

    def __init__(self, settings: ImageSettings, aspect: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if aspect not in ASPECTS:
            raise ValueError(f"aspect must be one of {ASPECTS}, got {aspect!r}")
        self.settings, self.aspect, self.max_pixels = settings, aspect, max_pixels
        self.blank = np.zeros((3, settings.crop_height, settings.crop_width), dtype=np.uint8)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels, keep = [], []
        for i, (data, has_image) in enumerate(zip(batch["image"], batch["has_image"], strict=True)):
            if not has_image:
                pixels.append(self.blank)
                keep.append(i)
                continue
            try:
                pixels.append(preprocess_image(decode_image(data, self.max_pixels), self.settings, self.aspect))
                keep.append(i)
            except ImageError as exc:  # shards are checked when written; this is a corrupt shard
                log.warning("dropping record %s: %s", batch["id"][i], exc)
        out = {name: batch[name][keep] for name in ("id", "input_ids", "labels", "length", "has_image")}
        out["pixel_values"] = np.stack(pixels) if pixels else np.zeros((0, *self.blank.shape), np.uint8)
        return out


def tokenize_conversations(batch: dict[str, np.ndarray], tokenizer: TokenizerSpec, rules: RecordRules) -> dict:
    """Template + tokenize + mask; ragged int32 input_ids / labels, their length, has_image.

    A plain function (the tokenizer is cached per worker process), so Ray Data runs it in the
    same tasks as the Parquet read instead of a separate actor stage."""
    tok = cached_tokenizer(tokenizer)
    ids, labels, keep = [], [], []
    has_image = np.array([data is not None for data in batch["image"]], dtype=bool)
    for i, conversation in enumerate(batch["conversations"]):
        turns = [{"from": t["from"], "value": t["value"]} for t in conversation]
        try:
            sample = build_sample(turns, rules.template, tok, bool(has_image[i]), rules.max_length, rules.visual_tokens)
        except MalformedConversation as exc:  # e.g. shards prepared with another tokenizer
            log.warning("dropping record %s: %s", batch["id"][i], exc)
            continue
        ids.append(np.asarray(sample.input_ids, dtype=np.int32))
        labels.append(np.asarray(sample.labels, dtype=np.int32))
        keep.append(i)
    return {
        "id": batch["id"][keep],
        "image": batch["image"][keep],
        "has_image": has_image[keep],
        "input_ids": ragged(ids),
        "labels": ragged(labels),
        "length": np.array([len(x) for x in ids], dtype=np.int32),
    }


def ragged(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def modality_grouped_batches(
    batches: Iterator[dict[str, np.ndarray]], batch_size: int, group_batches: int = 8, seed: int = 0
) -> Iterator[dict[str, np.ndarray]]:
    """Like LLaVA's group_by_modality_length, on a stream: buffer `group_batches` batches' worth of
    rows, split image from text-only samples, sort each by length, cut into batches and yield them
    in a seeded random order. A partial batch is carried into the next buffer, so no sample is
    dropped; only the stream's last batches can be short."""
    rng = random.Random(seed)
    pending: list[dict] = []
    carried: dict[bool, list[dict]] = {True: [], False: []}

    def flush(final: bool) -> Iterator[dict[str, np.ndarray]]:
        chunks = []
        for modality in (True, False):
            group = carried[modality] + [r for r in pending if bool(r["has_image"]) is modality]
            group.sort(key=lambda r: int(r["length"]))
            full = len(group) - len(group) % batch_size
            chunks += [group[i : i + batch_size] for i in range(0, full, batch_size)]
            carried[modality] = group[full:]
            if final and carried[modality]:
                chunks.append(carried[modality])
                carried[modality] = []
        pending.clear()
        rng.shuffle(chunks)
        for chunk in chunks:
            yield stack_rows(chunk)

    for batch in batches:
        pending.extend({k: v[i] for k, v in batch.items()} for i in range(len(batch["length"])))
        if len(pending) >= batch_size * group_batches:
            yield from flush(final=False)
    yield from flush(final=True)


def stack_rows(rows: list[dict]) -> dict[str, np.ndarray]:
    out = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        out[key] = ragged(values) if key in ("input_ids", "labels") else np.stack(values)
    return out
