"""Ray Data pipelines that feed training: shards (or a small JSON) -> tokens -> decoded uint8 images.

    read_shards / read_llava_json      rows of SHARD_SCHEMA
    -> tokenize_conversations         input_ids, labels (ragged), length, has_image (fused with the read)
    -> DecodeImages (actor pool)      pixel_values (3, H, W) uint8; the image bytes are dropped
    -> TorchTrainer(datasets=...)     equal streaming splits, one per worker
    -> iter_torch_batches(collate_fn=LlavaCollate(pad_id))   right-padded to the batch's longest

The transforms themselves are Ray-free and torch-free (mqt_llava.data.samples); the collate runs in
the training worker (mqt_llava.data.batches).

Tokenizing first means a row the template or the context length refuses is never decoded.
Shuffling is file order (seeded) plus `iter_torch_batches`'s local shuffle buffer (seeded); no
global shuffle, so a 558K epoch streams without materialising the dataset.
"""

from __future__ import annotations

import pyarrow as pa
import ray.data
from ray.data import FileShuffleConfig

from mqt_llava.data.llava_format import RecordRules, Rejected, check_record, iter_json_records
from mqt_llava.data.samples import DecodeImages, tokenize_conversations
from mqt_llava.data.shards import SHARD_SCHEMA, shard_files
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.spec import ModelSpec, max_visual_tokens


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


def training_dataset(
    source: ray.data.Dataset,
    spec: ModelSpec,
    template: str,
    image_settings: ImageSettings,
    decode_actors: int = 2,
    decode_cpus: float = 0.75,
    tokenize_cpus: float = 0.25,
    batch_size: int = 64,
    max_length: int | None = None,
    block_rows: int = 256,
) -> ray.data.Dataset:
    """Rows of SHARD_SCHEMA -> rows with MODEL_COLUMNS, ready for LlavaCollate.

    CPU requests are logical: decode actors take `decode_cpus` each and tokenize tasks
    `tokenize_cpus`, so on a small machine the read, tokenize and decode stages all fit beside the
    consumer (a pipeline whose actors reserve every CPU leaves none for reading and stalls).

    The tokenized rows reach the decode actors in blocks of at most `block_rows` rows: a shard is
    read as one block, and a block goes to one actor, so without the split a shard's images were
    all decoded by one actor while the others waited (the toy world's shards hold every record). 256
    rows at 336 px make blocks of about 90 MB, under Ray Data's 128 MB block target. Blocks smaller
    than `batch_size` are bundled back into batches of `batch_size` rows before they are decoded."""
    check_data_cpus(decode_actors * decode_cpus + tokenize_cpus)
    rules = RecordRules(template, max_length or spec.max_length, max_visual_tokens(spec))
    tokenized = source.map_batches(
        tokenize_conversations,
        fn_kwargs=dict(tokenizer=spec.tokenizer, rules=rules),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=tokenize_cpus,
    )
    return tokenized.repartition(target_num_rows_per_block=block_rows).map_batches(
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
