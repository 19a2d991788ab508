"""Where exports, shards, corpora and pretrained parts live: a local path or any pyarrow filesystem
URI (s3://, gs://, file://), and a pretrained part's hub name, directory or `package://` place. In
`model/` because the export format reads through it and is the lowest room that does; the data
pipeline and training use it from here."""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import pyarrow.fs as pafs


def resolve_location(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or any pyarrow filesystem URI (s3://, gs://, file://)."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


PACKAGED = "package://"


def is_local_path(name: str) -> bool:
    """`./x`, `../x`, `/x`, `~/x` are directories; anything else may be a hub name."""
    return name.startswith(("./", "../", "/", "~"))


def packaged_path(name: str) -> Path:
    """`package://<package>/<path>`: a directory shipped inside an installed Python package, found
    where that package is imported from (a checkout, a wheel's site-packages, a Ray worker's
    environment), so a preset can name parts it ships, as the tiny preset names its base models."""
    package, _, inside = name.removeprefix(PACKAGED).partition("/")
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise FileNotFoundError(f"{name}: no installed package {package!r}") from None
    if not isinstance(root, Path):
        raise FileNotFoundError(f"{name}: package {package!r} is not installed as files on disk ({root})")
    return root / inside


def pretrained_location(name: str) -> str:
    """A hub name as is, or a local or packaged directory that must exist (a clear error instead of
    a failed hub lookup when, say, a base model was never made)."""
    if name.startswith(PACKAGED):
        path = packaged_path(name)
    elif is_local_path(name):
        path = Path(name).expanduser()
    else:
        return name
    if not path.is_dir():
        raise FileNotFoundError(
            f"pretrained directory {name} does not exist ({path}); the tiny preset's base models are "
            "made by `python jobs/base_models.py`"
        )
    return str(path)
