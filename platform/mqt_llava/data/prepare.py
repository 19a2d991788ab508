"""LLaVA JSON + image folders -> Parquet shards with embedded image bytes, and a rejects report.

The driver streams the JSON (ijson), cuts it into shards by estimated size, and converts shards in
Ray tasks, at most `max_in_flight` at a time, so memory is bounded whatever the JSON size. Shard k
always holds the same records (the cut depends only on the input), and each finished shard leaves a
marker with its counts and rejects; a rerun skips shards whose marker exists and still reports the
totals of the whole input.

Output layout (a local directory or any pyarrow filesystem URI):
    part-00000.parquet ...      accepted records (the shard format: mqt_llava.data.shards)
    _progress/part-00000.json   per-shard counts and rejects (the completion marker)
    rejects.jsonl               every rejected record: {"id", "reason", "message"}
    summary.json                read / written / rejected by reason
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
import ray

from mqt_llava.data.llava_format import (
    RecordRules,
    Rejected,
    check_record,
    iter_json_records_with_progress,
    json_size,
)
from mqt_llava.data.shards import shard_name, write_shard
from mqt_llava.model.storage import resolve_location
from mqt_llava.model.tokenizer import TokenizerSpec, cached_tokenizer
from mqt_llava.output import Progress


@dataclass(frozen=True)
class PrepareJob:
    json_path: str
    image_root: str | None
    output: str
    tokenizer: TokenizerSpec
    rules: RecordRules
    shard_mb: float = 256.0
    max_records_per_shard: int = 50_000
    max_in_flight: int = 4


@dataclass
class PrepareReport:
    read: int = 0
    written: int = 0
    rejected: Counter = field(default_factory=Counter)
    shards_converted: int = 0
    shards_skipped: int = 0

    def add(self, marker: dict) -> None:
        self.read += marker["read"]
        self.written += marker["written"]
        self.rejected.update(marker["rejected"])

    def as_dict(self) -> dict:
        return dict(
            read=self.read,
            written=self.written,
            rejected=sum(self.rejected.values()),
            rejected_by_reason=dict(sorted(self.rejected.items())),
            shards_converted=self.shards_converted,
            shards_skipped=self.shards_skipped,
        )


class Output:
    """A directory on the local disk or behind a pyarrow filesystem URI."""

    def __init__(self, location: str) -> None:
        self.fs, self.root = resolve_location(location)
        self.fs.create_dir(f"{self.root}/_progress", recursive=True)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type != pafs.FileType.NotFound

    def write_text(self, name: str, text: str) -> None:
        with self.fs.open_output_stream(self.path(name)) as stream:
            stream.write(text.encode())

    def read_text(self, name: str) -> str:
        with self.fs.open_input_stream(self.path(name)) as stream:
            return stream.read().decode()


def estimated_bytes(record, image_root: str | None) -> int:
    """Text plus image file size: what the record adds to a shard (malformed records count 0)."""
    if not isinstance(record, dict):
        return 0
    turns = record.get("conversations")
    size = sum(len(str(t.get("value", ""))) for t in turns if isinstance(t, dict)) if isinstance(turns, list) else 0
    image = record.get("image")
    if image_root is not None and isinstance(image, str):
        with contextlib.suppress(OSError):  # a missing file is rejected later, with its reason
            size += os.stat(Path(image_root) / image).st_size
    return size


def plan_shards(job: PrepareJob) -> Iterator[tuple[int, list[tuple[int, object]], int]]:
    """(shard index, [(position, record)], JSON bytes consumed) in input order; a shard closes at
    `shard_mb` of estimated content (image files + text) or `max_records_per_shard` records."""
    limit = job.shard_mb * 1024 * 1024
    items, size, index, offset = [], 0, 0, 0
    for position, (record, offset) in enumerate(iter_json_records_with_progress(job.json_path)):
        items.append((position, record))
        size += estimated_bytes(record, job.image_root)
        if size >= limit or len(items) >= job.max_records_per_shard:
            yield index, items, offset
            items, size, index = [], 0, index + 1
    if items:
        yield index, items, offset


@ray.remote(max_retries=2)
def convert_shard(index: int, items: list, job: PrepareJob) -> dict:
    tokenizer = cached_tokenizer(job.tokenizer)
    rows, rejects = [], []
    for position, record in items:
        result = check_record(record, position, job.image_root, tokenizer, job.rules)
        if isinstance(result, Rejected):
            rejects.append(dict(id=result.id, reason=result.reason, message=result.message))
        else:
            rows.append(result)
    output = Output(job.output)
    name = shard_name(index)
    if rows:
        write_shard(output.fs, output.root, index, rows, scratch="_progress")
    marker = dict(
        shard=name,
        read=len(items),
        written=len(rows),
        rejected=dict(Counter(r["reason"] for r in rejects)),
        rejects=rejects,
    )
    output.write_text(f"_progress/{name}.json", json.dumps(marker))
    return marker


def prepare(job: PrepareJob, log=print, progress_every_s: float = 10.0) -> PrepareReport:
    output = Output(job.output)
    report = PrepareReport()
    total_bytes = json_size(job.json_path)
    pending: dict[ray.ObjectRef, int] = {}
    names: list[str] = []
    start = time.monotonic()
    progress = Progress(total_bytes or 1, every_s=progress_every_s)

    def collect(timeout: float | None) -> None:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        for ref in done:
            pending.pop(ref)
            report.add(ray.get(ref))
            report.shards_converted += 1

    for index, items, consumed in plan_shards(job):
        name = shard_name(index)
        names.append(name)
        if output.exists(f"_progress/{name}.json"):
            report.add(json.loads(output.read_text(f"_progress/{name}.json")))
            report.shards_skipped += 1
        else:
            while len(pending) >= job.max_in_flight:
                collect(timeout=None)
            pending[convert_shard.remote(index, items, job)] = index
        if progress.update(consumed) and consumed < progress.total:
            log(
                f"[prepare] {consumed / progress.total:6.1%} of the JSON, shards planned {len(names)} "
                f"(done {report.shards_converted}, skipped {report.shards_skipped}), "
                f"records done {report.read} at {report.read / (time.monotonic() - start):.0f}/s, {progress.eta}"
            )
    while pending:
        collect(timeout=None)

    rejects = []
    for name in names:
        rejects += json.loads(output.read_text(f"_progress/{name}.json"))["rejects"]
    output.write_text("rejects.jsonl", "".join(json.dumps(r) + "\n" for r in rejects))
    output.write_text("summary.json", json.dumps(report.as_dict(), indent=2))
    return report
