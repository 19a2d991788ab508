"""Any training checkpoint turned into an export: what a mid-run checkpoint is worth evaluating or
serving (the run's last step is exported by the loop itself).

    python jobs/export_checkpoint.py --set checkpoint=runs/train/llava-7b-stage2/checkpoint_0001000 \\
        --set out=runs/train/llava-7b-stage2/export-step1000

The checkpoint holds the trained weights (DeepSpeed's ZeRO-2 or ZeRO-3 files, fp32 master weights
reassembled by DeepSpeed's own `zero_to_fp32`, on CPU, no GPU needed) and the run's resolved
config (`run.json`); the frozen parts are loaded from their pretrained source, as the run loaded
them. The export's training record says which checkpoint and step it came from.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from pydantic import Field

from mqt_llava.config import Spec
from mqt_llava.model.spec import ModelSpec
from mqt_llava.train.checkpoint import DEEPSPEED_TAG, RUN_CONFIG, TRAIN_STATE


class CheckpointExportSpec(Spec):
    """jobs/export_checkpoint.py's spec: which checkpoint, where its export goes."""

    checkpoint: str = Field(description="a run's checkpoint_<step> directory")
    out: str = Field(description="the export directory to write")


class NotACheckpoint(ValueError):
    pass


def read_run_config(checkpoint: Path) -> dict:
    if not (checkpoint / DEEPSPEED_TAG).is_dir():
        raise NotACheckpoint(f"{checkpoint}: not a training checkpoint (no {DEEPSPEED_TAG}/ directory)")
    if not (checkpoint / RUN_CONFIG).is_file():
        raise NotACheckpoint(
            f"{checkpoint}: no {RUN_CONFIG} (written by checkpoints since the export command exists); "
            "an older checkpoint can be resumed and its run's export used instead"
        )
    return json.loads((checkpoint / RUN_CONFIG).read_text())


def trained_weights(checkpoint: Path) -> dict:
    """The checkpoint's trainable weights in fp32, by parameter name (DeepSpeed's reassembly; its
    progress lines are kept out of the output)."""
    # Reassembly reads onto the CPU whichever accelerator DeepSpeed picked for this process.
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with contextlib.redirect_stdout(io.StringIO()):
        return get_fp32_state_dict_from_zero_checkpoint(
            str(checkpoint), tag=DEEPSPEED_TAG, exclude_frozen_parameters=True
        )


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the export of `checkpoint` to `out`; returns `out`."""
    from mqt_llava.model.builder import build_model
    from mqt_llava.model.export import load_part_state, save_export
    from mqt_llava.model.stages import CONNECTOR, configure_trainable

    checkpoint, out = Path(checkpoint), Path(out)
    config = read_run_config(checkpoint)
    built = build_model(ModelSpec.model_validate(config["model"]), seed=config["stage"]["seed"])  # as the run did
    if init_from := config["stage"].get("init_from"):
        # The connector as the run started it: parts it kept frozen (stage 1's trained position table,
        # under the official recipe) are not in the checkpoint and come from there.
        built.model.connector.load_state_dict(load_part_state(init_from, CONNECTOR))
    configure_trainable(built.model, config["stage"]["stage"])
    trainable = {name for name, p in built.model.named_parameters() if p.requires_grad}
    weights = trained_weights(checkpoint)
    if missing := sorted(trainable - set(weights)):
        raise NotACheckpoint(f"{checkpoint}: lacks {len(missing)} trained weight(s) of its run ({missing[:3]}...)")
    result = built.model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise NotACheckpoint(f"{checkpoint}: weights its model does not have: {result.unexpected_keys[:3]}")
    state = json.loads((checkpoint / TRAIN_STATE).read_text())
    record = config | {"exported_from": {"checkpoint": str(checkpoint.resolve()), **state}}
    save_export(built, out, record=record)
    return out
