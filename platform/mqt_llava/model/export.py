"""An export: the one directory training writes and evaluation, serving and the next stage read.

    config.json, model*.safetensors     the MQTLlavaForConditionalGeneration (save_pretrained)
    tokenizer files                     its tokenizer
    preprocessor_config.json            its image processor (size, mean, std)
    mqt_llava_training.json             how it was made: the resolved stage and model configs

This module is the only place that knows those files: writing them, checking a directory is an
export, reading M without loading weights, reading one part's weights, and the training record.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mqt_llava.model.builder import BuiltModel

CONFIG_FILE = "config.json"
TRAINING_RECORD = "mqt_llava_training.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


class NotAnExport(ValueError):
    pass


def check_export(path: str | Path, what: str = "model") -> Path:
    """`path` as a Path if it holds an export's config; else NotAnExport naming `what`."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise NotAnExport(f"{what} {path}: not an export directory (no {CONFIG_FILE})")
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    """config.json of an export at a local path or a URI (s3://, gs://, file://)."""
    if "://" not in str(path):
        return json.loads((check_export(path) / CONFIG_FILE).read_text())
    from mqt_llava.model.storage import resolve_location

    filesystem, root = resolve_location(str(path))
    if not filesystem.get_file_info(f"{root}/{CONFIG_FILE}").is_file:
        raise NotAnExport(f"model {path}: not an export directory (no {CONFIG_FILE})")
    with filesystem.open_input_stream(f"{root}/{CONFIG_FILE}") as stream:
        return json.loads(stream.read())


def max_visual_tokens(path: str | Path) -> int:
    """M, from the export's config alone (no weights loaded)."""
    return int(read_config(path)["max_visual_tokens"])


def visual_token_range(path: str | Path) -> tuple[int, int]:
    """(smallest, largest) budget, from the export's config alone; exports written before connectors
    had a smallest budget are MQTs (1..M)."""
    config = read_config(path)
    return int(config.get("min_visual_tokens") or 1), int(config["max_visual_tokens"])


def save_export(
    built: BuiltModel, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None, record: dict | None = None
) -> None:
    """Write the model, its tokenizer and its image processor (and the training record, when
    given) to `path`: what evaluation and serving load (`InferenceEngine.from_export`) on a machine
    without DeepSpeed. `state_dict` replaces the module's own weights (ZeRO-3 keeps only a
    partition of them on each rank)."""
    built.model.save_pretrained(path, state_dict=state_dict)
    built.tokenizer.save_pretrained(path)
    built.image_settings.to_processor().save_pretrained(path)
    if record is not None:
        (Path(path) / TRAINING_RECORD).write_text(json.dumps(record, indent=2))


def read_training_record(path: str | Path) -> dict[str, Any]:
    """The resolved configs an export was trained with (mqt_llava.train.plan.resolved_config)."""
    record = check_export(path) / TRAINING_RECORD
    if not record.is_file():
        raise FileNotFoundError(f"{path}: no {TRAINING_RECORD} (not written by a training stage)")
    return json.loads(record.read_text())


def load_part_state(location: str | Path, part: str) -> dict[str, torch.Tensor]:
    """One part's weights (e.g. "connector") from an export at a local path or a URI (s3://, gs://,
    file://), reading only that part's bytes: the shard index, the header of each shard that holds
    the part, then the part's tensors by byte range. A 7B stage-1 export holds 14 GB and stage 2
    needs only its connector (9M parameters), on every worker. Keys come without the part prefix.

    Ranged reads of the files `save_pretrained` already writes, rather than a separate connector
    file written at export time: every export reads the same way, the released checkpoint's import
    and exports written before included, and there is no second copy of the weights to keep equal."""
    from mqt_llava.model.storage import resolve_location

    filesystem, root = resolve_location(str(location))
    prefix = f"{part}."
    state: dict[str, torch.Tensor] = {}
    for name in weight_files(filesystem, root, location, prefix):
        with filesystem.open_input_file(f"{root}/{name}") as file:
            state |= read_tensors(file, prefix, f"{location}/{name}")
    if not state:
        raise KeyError(f"{location} holds no weights for part {part!r}")
    return {key.removeprefix(prefix): value for key, value in state.items()}


def weight_files(filesystem, root: str, location: str | Path, prefix: str) -> list[str]:
    """The safetensors files that may hold keys starting with `prefix`: those the index maps them to
    (a sharded export), else the one model.safetensors."""
    index = f"{root}/{WEIGHTS_INDEX}"
    if filesystem.get_file_info(index).is_file:
        with filesystem.open_input_stream(index) as stream:
            weight_map = json.loads(stream.read())["weight_map"]
        return sorted({file for key, file in weight_map.items() if key.startswith(prefix)})
    if filesystem.get_file_info(f"{root}/{WEIGHTS_FILE}").is_file:
        return [WEIGHTS_FILE]
    raise FileNotFoundError(f"{location} is not an export: no {WEIGHTS_FILE} (or its index)")


def read_tensors(file, prefix: str, where: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix`, from an open safetensors file (a pyarrow random
    access file), by byte range. The format: an 8-byte little-endian header length, a JSON header
    giving each tensor's dtype, shape and [begin, end) offsets into the data that follows. The bytes
    read are re-framed as a safetensors buffer of those tensors alone, which safetensors decodes."""
    from safetensors.torch import load

    def read(size: int, offset: int) -> bytes:
        data = file.read_at(size, offset)
        if len(data) != size:
            raise ValueError(f"{where}: truncated safetensors file")
        return data

    (header_size,) = struct.unpack("<Q", read(8, 0))
    header = json.loads(read(header_size, 8))
    wanted = sorted(
        ((key, entry) for key, entry in header.items() if key.startswith(prefix)),
        key=lambda item: item[1]["data_offsets"][0],
    )
    # Tensors stored back to back are read in one request (one ranged GET on object storage).
    runs: list[list] = []  # [begin, end, names]
    for key, entry in wanted:
        begin, end = entry["data_offsets"]
        if runs and runs[-1][1] == begin:
            runs[-1][1] = end
            runs[-1][2].append(key)
        else:
            runs.append([begin, end, [key]])
    chunks, framed, offset = [], {}, 0
    for begin, end, names in runs:
        chunks.append(read(end - begin, 8 + header_size + begin))
        for key in names:
            start, stop = (position - begin + offset for position in header[key]["data_offsets"])
            framed[key] = {"dtype": header[key]["dtype"], "shape": header[key]["shape"], "data_offsets": [start, stop]}
        offset += end - begin
    if not framed:
        return {}
    head = json.dumps(framed).encode()
    head += b" " * (-len(head) % 8)  # the format pads its header to 8 bytes with spaces
    return load(struct.pack("<Q", len(head)) + head + b"".join(chunks))
