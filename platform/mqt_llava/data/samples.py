"""Training samples without Ray: the per-batch transforms every pipeline applies (template +
tokenize, image decode), the collate, modality grouping, and `LocalShard`, which reads a rank's
share of the Parquet shards in-process. The Ray Data pipeline (mqt_llava.data.datasets) maps the same
transforms over a cluster; a run under torchrun (no Ray) reads through LocalShard.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import numpy as np
import torch

from mqt_llava.data.conversation import MalformedConversation, build_sample
from mqt_llava.data.images import ASPECTS, DEFAULT_MAX_PIXELS, ImageError, decode_image, preprocess_image
from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.shards import count_rows, read_shard, shard_files
from mqt_llava.model.builder import cached_tokenizer, max_visual_tokens
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.modeling import IGNORE_INDEX
from mqt_llava.model.spec import ModelSpec, TokenizerSpec

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


class LocalShard:
    """One rank's equal share of the shards' rows, read and transformed in this process: what Ray
    Train's streaming split hands a worker, for runs without Ray (torchrun). Rows are split by
    position (rank r of w takes rows [r*n/w, (r+1)*n/w) of floor(rows/w) each, as `equal=True` does),
    and `iter_batches` has the signature of Ray Data's, local shuffle buffer included."""

    def __init__(
        self,
        location: str,
        spec: ModelSpec,
        template: str,
        image_settings: ImageSettings,
        rank: int = 0,
        world_size: int = 1,
        max_length: int | None = None,
    ) -> None:
        filesystem, files = shard_files(location)
        if not files:
            raise FileNotFoundError(f"{location}: no Parquet shards")
        self.filesystem, self.files = filesystem, files
        self.rules = RecordRules(template, max_length or spec.max_length, max_visual_tokens(spec))
        self.tokenizer = spec.tokenizer
        self.decode = DecodeImages(image_settings, spec.image.aspect)
        per_rank = count_rows(location) // world_size
        self.start, self.stop = rank * per_rank, (rank + 1) * per_rank

    def rows(self) -> Iterator[dict[str, np.ndarray]]:
        """This rank's rows as numpy batches of SHARD_SCHEMA, in file order (one row group at a time)."""
        seen = 0
        for name in self.files:
            for group in read_shard(self.filesystem, name):
                lo, hi = max(self.start - seen, 0), min(self.stop - seen, group.num_rows)
                seen += group.num_rows
                if lo < hi:
                    table = group.slice(lo, hi - lo)
                    yield {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.schema.names}
                if seen >= self.stop:
                    return

    def iter_batches(
        self,
        batch_size: int,
        batch_format: str = "numpy",
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        if batch_format != "numpy":
            raise ValueError("LocalShard yields numpy batches only")
        rng = np.random.default_rng(local_shuffle_seed)
        buffer: list[dict] = []
        # As Ray Data: with a shuffle buffer, each batch is drawn at random from at least that many
        # buffered rows; without one, batches come in order.
        minimum = max(local_shuffle_buffer_size or 0, batch_size)
        for raw in self.rows():
            batch = self.decode(tokenize_conversations(raw, self.tokenizer, self.rules))
            buffer.extend({k: v[i] for k, v in batch.items()} for i in range(len(batch["length"])))
            while len(buffer) >= minimum:
                yield self.take(buffer, batch_size, rng, local_shuffle_buffer_size)
        while len(buffer) >= batch_size:
            yield self.take(buffer, batch_size, rng, local_shuffle_buffer_size)
        if buffer and not drop_last:
            yield self.take(buffer, len(buffer), rng, local_shuffle_buffer_size)

    @staticmethod
    def take(buffer: list[dict], size: int, rng, shuffle: int | None) -> dict[str, np.ndarray]:
        if shuffle:
            picks = sorted(rng.choice(len(buffer), size, replace=False), reverse=True)
            rows = [buffer.pop(int(i)) for i in picks]
        else:
            rows, buffer[:] = buffer[:size], buffer[size:]
        return stack_rows(rows)


class LlavaCollate:
    """numpy batch -> model inputs: input_ids/labels right-padded to the batch's longest sequence,
    attention_mask, and pixel_values with one image per image sample (text-only samples have none)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        n = len(batch["input_ids"])
        length = max(len(x) for x in batch["input_ids"])
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        for i, (ids, lab) in enumerate(zip(batch["input_ids"], batch["labels"], strict=True)):
            input_ids[i, : len(ids)] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
            labels[i, : len(lab)] = torch.from_numpy(np.asarray(lab, dtype=np.int64))
            attention_mask[i, : len(ids)] = 1
        has_image = torch.from_numpy(np.asarray(batch["has_image"], dtype=bool))
        pixel_values = torch.from_numpy(np.ascontiguousarray(batch["pixel_values"]))[has_image]
        return dict(input_ids=input_ids, labels=labels, attention_mask=attention_mask, pixel_values=pixel_values)


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
