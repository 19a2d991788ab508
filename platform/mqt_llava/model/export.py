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
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mqt_llava.model.builder import BuiltModel

CONFIG_FILE = "config.json"
TRAINING_RECORD = "mqt_llava_training.json"


class NotAnExport(ValueError):
    pass


def check_export(path: str | Path, what: str = "model") -> Path:
    """`path` as a Path if it holds an export's config; else NotAnExport naming `what`."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise NotAnExport(f"{what} {path}: not an export directory (no {CONFIG_FILE})")
    return path


def read_config(path: str | Path) -> dict[str, Any]:
    return json.loads((check_export(path) / CONFIG_FILE).read_text())


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


def load_part_state(path: str | Path, part: str) -> dict[str, torch.Tensor]:
    """One part's weights (e.g. "connector") from an export's safetensors, without loading the rest: a
    7B stage-1 export holds 14 GB, stage 2 needs only its connector. Keys come without the part prefix."""
    from safetensors import safe_open

    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{path} is not an export: no model.safetensors (or its index)")
    prefix = f"{part}."
    state = {}
    for name in files:
        with safe_open(str(path / name), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                if key.startswith(prefix):
                    state[key.removeprefix(prefix)] = f.get_tensor(key)
    if not state:
        raise KeyError(f"{path} holds no weights for part {part!r}")
    return state
