"""The DeepSpeed config a stage runs with, derived from its StageSpec and where it runs."""

from __future__ import annotations

from mqt_llava.config import StageSpec


def deepspeed_config(stage: StageSpec, use_gpu: bool) -> dict:
    """ZeRO stage, batch sizes and clipping from the spec; bf16 only on GPU (CPU trains in fp32,
    where bf16 was slower here); torch's AdamW is used, which DeepSpeed calls 'untested'."""
    zero: dict = {"stage": stage.zero_stage}
    if stage.zero_stage == 3:
        # Lets rank 0 gather the full weights for save_pretrained at the end.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": stage.global_batch_size,
        "train_micro_batch_size_per_gpu": stage.micro_batch_size,
        "gradient_accumulation_steps": stage.gradient_accumulation_steps,
        "gradient_clipping": stage.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(use_gpu and stage.bf16)},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # the platform prints its own progress lines
        "wall_clock_breakdown": False,
    }
