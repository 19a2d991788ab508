"""The DeepSpeed config a stage runs with, derived from its StageSpec and where it runs.

The ZeRO section is the official MQT-LLaVA scripts' (scripts/zero2.json, scripts/zero3.json) with
their "auto" entries resolved as Hugging Face's Trainer resolves them (`HfTrainerDeepSpeedConfig`:
from the model config's `hidden_size`, the LLM's for LLaVA); DeepSpeed's own defaults for those
entries are larger (500M-element reduce buckets, 50M prefetch buckets), which costs 1-2 GB more per
GPU under ZeRO-3 for a 7B LLM.
"""

from __future__ import annotations

from torch import nn

from mqt_llava.train.spec import StageSpec

# zero2.json and zero3.json's fixed entries (both files: overlap, contiguous gradients, sub-groups).
OFFICIAL_ZERO = {"overlap_comm": True, "contiguous_gradients": True, "sub_group_size": 10**9}
OFFICIAL_ZERO3 = {"stage3_max_live_parameters": 10**9, "stage3_max_reuse_distance": 10**9}


def hidden_size_buckets(hidden_size: int, zero_stage: int) -> dict[str, int]:
    """What Hugging Face's integration writes for the "auto" bucket entries of the official files."""
    out = {"reduce_bucket_size": hidden_size * hidden_size}
    if zero_stage == 3:
        out["stage3_prefetch_bucket_size"] = int(0.9 * hidden_size * hidden_size)
        out["stage3_param_persistence_threshold"] = 10 * hidden_size
    return out


def llm_hidden_size(model: nn.Module) -> int | None:
    """The hidden size HF's integration reads: the official model's config is the Llama config itself,
    ours nests it as `text_config`. None for a module without a config (DeepSpeed's defaults then)."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    size = getattr(config, "hidden_size", None)
    return None if size is None else int(size)


def deepspeed_config(stage: StageSpec, use_gpu: bool, hidden_size: int | None = None) -> dict:
    """ZeRO stage, batch sizes and clipping from the spec; bf16 only on GPU (CPU trains in fp32,
    where bf16 was slower here); torch's AdamW is used, which DeepSpeed calls 'untested'.
    `hidden_size` (the LLM's) sizes the communication buckets as the official runs had them; without
    it DeepSpeed's defaults apply."""
    zero: dict = {"stage": stage.zero_stage}
    if stage.zero_stage >= 2:
        zero |= OFFICIAL_ZERO
    if stage.zero_stage == 3:
        zero |= OFFICIAL_ZERO3
        # Lets rank 0 gather the full weights for save_pretrained at the end.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if hidden_size is not None and stage.zero_stage >= 2:
        zero |= hidden_size_buckets(hidden_size, stage.zero_stage)
    return {
        "train_batch_size": stage.global_batch_size,
        "train_micro_batch_size_per_gpu": stage.micro_batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        # Always written: DeepSpeed's default changed from none (0.12, the official runs) to 1.0.
        "gradient_clipping": stage.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(use_gpu and stage.bf16)},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # the platform prints its own progress lines
        "wall_clock_breakdown": False,
    }
