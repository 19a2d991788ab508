"""The shard format's one home: a shard written by `write_shard` is listed, counted and read back
by the same module, and nothing else in the directory is taken for a shard."""

import pyarrow as pa
import pytest

from mqt_llava.data.shards import SHARD_SCHEMA, count_rows, read_shard, shard_files, write_shard
from mqt_llava.model.storage import resolve_location


def rows(prefix: str, n: int) -> list[dict]:
    return [
        dict(
            id=f"{prefix}{i}",
            image_path=None if i % 2 else f"img/{i}.png",
            image=None if i % 2 else bytes([i]) * 4,
            conversations=[{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}],
            num_tokens=10 + i,
            width=None if i % 2 else 8,
            height=None if i % 2 else 6,
        )
        for i in range(n)
    ]


def test_written_shards_are_listed_counted_and_read_back(tmp_path):
    filesystem, root = resolve_location(str(tmp_path))
    (tmp_path / "_progress").mkdir()
    first, second = rows("a", 5), rows("b", 3)
    write_shard(filesystem, root, 1, second, scratch="_progress")
    write_shard(filesystem, root, 0, first, scratch="_progress")
    (tmp_path / "rejects.jsonl").write_text("")
    (tmp_path / "summary.json").write_text("{}")

    _, files = shard_files(str(tmp_path))
    assert [f.rsplit("/", 1)[1] for f in files] == ["part-00000.parquet", "part-00001.parquet"]
    assert not list((tmp_path / "_progress").iterdir())  # the temporary files were moved into place
    assert count_rows(str(tmp_path)) == 8
    batches = [batch for name in files for batch in read_shard(filesystem, name, batch_size=2)]
    assert all(batch.schema.equals(SHARD_SCHEMA) for batch in batches)
    assert pa.Table.from_batches(batches).to_pylist() == first + second


def test_a_row_off_the_schema_is_refused(tmp_path):
    filesystem, root = resolve_location(str(tmp_path))
    (tmp_path / "_progress").mkdir()
    bad = rows("a", 1)
    bad[0]["num_tokens"] = None  # not nullable
    with pytest.raises((pa.ArrowInvalid, ValueError)):
        write_shard(filesystem, root, 0, bad, scratch="_progress")
    assert shard_files(str(tmp_path))[1] == []


def test_a_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        shard_files(str(tmp_path / "nowhere"))
