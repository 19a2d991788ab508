"""Where exports, shards and corpora live: a local path or any pyarrow filesystem URI (s3://, gs://,
file://). In `model/` because the export format reads through it and is the lowest room that does;
the data pipeline and training use it from here."""

from __future__ import annotations

import os

import pyarrow.fs as pafs


def resolve_location(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or any pyarrow filesystem URI (s3://, gs://, file://)."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)
