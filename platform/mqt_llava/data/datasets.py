"""Ray Data pipelines that feed training: shards (or a small JSON) -> tokens -> decoded uint8 images.

    read_shards / read_llava_json      rows of SHARD_SCHEMA
    -> tokenize_conversations         input_ids, labels (ragged), length, has_image (fused with the read)
    -> DecodeImages (actor pool)      pixel_values (3, H, W) uint8; the image bytes are dropped
    -> TorchTrainer(datasets=...)     equal streaming splits, one per worker
    -> iter_torch_batches(collate_fn=LlavaCollate(pad_id))   right-padded to the batch's longest

Tokenizing first means a row the template or the context length refuses is never decoded.
Shuffling is file order (seeded) plus `iter_torch_batches`'s local shuffle buffer (seeded); no
global shuffle, so a 558K epoch streams without materialising the dataset.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import ray.data
import torch
from ray.data import FileShuffleConfig

from mqt_llava.config import ModelSpec, TokenizerSpec
from mqt_llava.data.conversation import MalformedConversation, build_sample
from mqt_llava.data.images import (
    ASPECTS,
    DEFAULT_MAX_PIXELS,
    ImageError,
    ImageSettings,
    decode_image,
    preprocess_image,
)
from mqt_llava.data.llava_format import (
    SHARD_SCHEMA,
    RecordRules,
    Rejected,
    check_record,
    iter_json_records,
    resolve_location,
)
from mqt_llava.model.builder import cached_tokenizer
from mqt_llava.model.modeling import IGNORE_INDEX

log = logging.getLogger(__name__)
MODEL_COLUMNS = ("id", "input_ids", "labels", "pixel_values", "has_image", "length")


def shard_files(location: str) -> tuple[pafs.FileSystem, list[str]]:
    """The Parquet files of a shard directory (or one file), sorted: only those, so the rejects and
    summary files prepare_llava writes beside them are never handed to a reader."""
    filesystem, path = resolve_location(location)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(location)
    if info.type == pafs.FileType.File:
        return filesystem, [path]
    selector = pafs.FileSelector(path, recursive=True)
    return filesystem, sorted(f.path for f in filesystem.get_file_info(selector) if f.path.endswith(".parquet"))


def read_shards(uri: str | list[str], seed: int | None = 0, num_cpus: float = 0.25) -> ray.data.Dataset:
    """Parquet shards written by prepare_llava (local path or pyarrow URI); files in seeded order."""
    shuffle = FileShuffleConfig(seed=seed) if seed is not None else None
    locations = [uri] if isinstance(uri, str) else uri
    listed = [shard_files(location) for location in locations]
    files = [f for _, names in listed for f in names]
    return ray.data.read_parquet(files, filesystem=listed[0][0], shuffle=shuffle, num_cpus=num_cpus)


def read_llava_json(
    json_path: str, image_root: str | None, tokenizer, rules: RecordRules
) -> tuple[ray.data.Dataset, list[Rejected]]:
    """For small inputs: check a LLaVA JSON in the driver (same rules as prepare_llava) and return
    a dataset of the accepted rows and the rejected records."""
    rows, rejects = [], []
    for position, record in enumerate(iter_json_records(json_path)):
        result = check_record(record, position, image_root, tokenizer, rules)
        (rejects if isinstance(result, Rejected) else rows).append(result)
    return ray.data.from_arrow(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)), rejects


class DecodeImages:
    """Actor UDF: image bytes -> (3, H, W) uint8, LLaVA's pad-to-square + resize. Text-only rows get
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


def training_dataset(
    source: ray.data.Dataset,
    spec: ModelSpec,
    template: str,
    image_settings: ImageSettings,
    decode_actors: int = 2,
    decode_cpus: float = 0.75,
    tokenize_cpus: float = 0.25,
    batch_size: int = 64,
) -> ray.data.Dataset:
    """Rows of SHARD_SCHEMA -> rows with MODEL_COLUMNS, ready for LlavaCollate.

    CPU requests are logical: decode actors take `decode_cpus` each and tokenize tasks
    `tokenize_cpus`, so on a small machine the read, tokenize and decode stages all fit beside the
    consumer (a pipeline whose actors reserve every CPU leaves none for reading and stalls)."""
    check_data_cpus(decode_actors * decode_cpus + tokenize_cpus)
    rules = RecordRules(template, spec.max_length, spec.mqt.num_queries)
    tokenized = source.map_batches(
        tokenize_conversations,
        fn_kwargs=dict(tokenizer=spec.tokenizer, rules=rules),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=tokenize_cpus,
    )
    return tokenized.map_batches(
        DecodeImages,
        fn_constructor_kwargs=dict(settings=image_settings, aspect=spec.image.aspect),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=decode_actors),
        num_cpus=decode_cpus,
    )


def check_data_cpus(requested: float) -> None:
    """Refuse a pipeline whose stages cannot all be scheduled at once: it would stall, not fail."""
    if not ray.is_initialized():
        return
    available = ray.cluster_resources().get("CPU", 0)
    if requested >= available:
        raise ValueError(
            f"the data pipeline asks for {requested:g} CPUs (decode actors + tokenize tasks) but the cluster "
            f"has {available:g}; lower decode_actors / decode_cpus so reads can still be scheduled"
        )


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
