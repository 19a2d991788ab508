"""Batches in a training worker: the collate into the model's torch inputs, and `LocalShard`, which
reads a rank's share of the Parquet shards in-process for runs without Ray (torchrun). The
transforms both paths apply are torch-free, in mqt_llava.data.samples."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.samples import DecodeImages, stack_rows, tokenize_conversations
from mqt_llava.data.shards import count_rows, read_shard, shard_files
from mqt_llava.model.constants import IGNORE_INDEX
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.spec import ModelSpec, max_visual_tokens


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
