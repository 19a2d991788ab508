"""The shard format, in one place: what prepare_llava writes and every training reader reads.

    <dir>/part-00000.parquet, part-00001.parquet, ...   rows of SHARD_SCHEMA, shard k in file k

A shard directory is a local path or any pyarrow filesystem URI (s3://, gs://, file://). Readers list
only the `.parquet` files (`shard_files`), so the rejects, summary and progress markers
prepare_llava writes beside the shards are never handed to one. A shard file that exists is
complete: `write_shard` writes it under a temporary name and then moves it into place.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mqt_llava.model.storage import resolve_location

SHARD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("image_path", pa.string()),  # null for text-only records
        pa.field("image", pa.binary()),  # the file's original bytes; null for text-only records
        pa.field(
            "conversations",
            pa.list_(pa.struct([pa.field("from", pa.string()), pa.field("value", pa.string())])),
            nullable=False,
        ),
        pa.field("num_tokens", pa.int32(), nullable=False),  # after tokenization, image counted once
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
    ]
)
SHARD_SUFFIX = ".parquet"


def shard_name(index: int) -> str:
    """Shard `index`'s name without its suffix (prepare_llava names its progress marker after it)."""
    return f"part-{index:05d}"


def write_shard(filesystem: pafs.FileSystem, root: str, index: int, rows: list[dict], scratch: str) -> str:
    """Write `rows` (dicts of SHARD_SCHEMA's columns) as shard `index` under `root`, first to a
    temporary file in the directory `scratch` (beside it, on the same filesystem), then moved into
    place. Returns the shard's path."""
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    name = shard_name(index) + SHARD_SUFFIX
    temporary, final = f"{root}/{scratch}/{name}.tmp", f"{root}/{name}"
    pq.write_table(table, temporary, filesystem=filesystem)
    filesystem.move(temporary, final)
    return final


def shard_files(location: str) -> tuple[pafs.FileSystem, list[str]]:
    """The shard files of a shard directory (or one file), sorted: only those, so the rejects and
    summary files prepare_llava writes beside them are never handed to a reader."""
    filesystem, path = resolve_location(location)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(location)
    if info.type == pafs.FileType.File:
        return filesystem, [path]
    selector = pafs.FileSelector(path, recursive=True)
    return filesystem, sorted(f.path for f in filesystem.get_file_info(selector) if f.path.endswith(SHARD_SUFFIX))


def count_rows(location: str) -> int:
    """Rows in a directory of shards, from the files' footers (no data read)."""
    filesystem, files = shard_files(location)
    total = 0
    for name in files:
        with filesystem.open_input_file(name) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def read_shard(filesystem: pafs.FileSystem, path: str, batch_size: int = 256) -> Iterator[pa.RecordBatch]:
    """One shard's rows in file order, `batch_size` rows at a time (one row group read at a time)."""
    with filesystem.open_input_file(path) as handle:
        yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_size)
