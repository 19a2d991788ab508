"""The DeepSpeed strategy (`strategy: deepspeed`, the default): AdamW with Hugging Face's cosine
schedule under DeepSpeed's engine, ZeRO as the stage configures it (mqt_llava.train.deepspeed_config),
on the GPU with NCCL or on the CPU with gloo. The loop knows neither DeepSpeed's API nor which
launcher started the process (OpenRLHF's strategy/actor split).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from mqt_llava.train import checkpoint
from mqt_llava.train.checkpoint import DataPosition, TrainState
from mqt_llava.train.deepspeed_config import deepspeed_config, llm_hidden_size
from mqt_llava.train.plan import StagePlan
from mqt_llava.train.spec import StageSpec
from mqt_llava.train.strategies import TrainingStrategy, register_strategy


def deepspeed_on(use_gpu: bool):
    """DeepSpeed, with its accelerator the one this process trains on (CUDA or the CPU).

    DeepSpeed picks its accelerator once per process, at its first import: `DS_ACCELERATOR` if the
    environment has it, else CUDA when torch sees a GPU, else the CPU. The training process's own
    placement is what must count: a GPU worker whose DeepSpeed took the CPU keeps the model on the CPU
    and then fails in NCCL on CPU tensors. So no code of this project sets `DS_ACCELERATOR` (CPU Ray
    workers get it in their runtime env from the launcher, mqt_llava.train.launch), and when
    DeepSpeed's choice still differs from `use_gpu` (an inherited variable, a CPU run on a GPU node),
    it is corrected here, through DeepSpeed's own `set_accelerator`, before any engine exists.
    """
    import deepspeed
    from deepspeed.accelerator import get_accelerator, set_accelerator

    if use_gpu and not torch.cuda.is_available():
        raise RuntimeError(
            "use_gpu is set but this process sees no GPU (torch.cuda.is_available() is False): a CPU-only "
            "torch build, no GPU on this node, or the worker was started without a GPU"
        )
    wanted = "cuda" if use_gpu else "cpu"
    if get_accelerator().device_name() != wanted:
        if use_gpu:
            from deepspeed.accelerator.cuda_accelerator import CUDA_Accelerator as Accelerator
        else:
            from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator as Accelerator
        set_accelerator(Accelerator())
    return deepspeed


def lr_schedule(optimizer: torch.optim.Optimizer, plan: StagePlan):
    """Linear warmup over the plan's warmup steps, then cosine to zero at its last step (LLaVA's
    `--lr_scheduler_type cosine`, Hugging Face's own function)."""
    return get_cosine_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)


DEPRECATED_COLLECTIVE = r"`torch\.distributed\.\w+` is deprecated"


def quiet_collectives(method):
    """DeepSpeed 0.19 calls collectives that torch 2.13 deprecated, a FutureWarning each, once per step:
    ignored while a strategy method runs, and the caller's warning filters restored after it."""

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=DEPRECATED_COLLECTIVE, category=FutureWarning)
            return method(*args, **kwargs)

    return wrapped


@register_strategy
class DeepSpeedStrategy(TrainingStrategy):
    kind = "deepspeed"

    def __init__(self, stage: StageSpec, use_gpu: bool) -> None:
        super().__init__(stage, use_gpu)
        self.engine = None
        self.optimizer = None
        self.deepspeed = deepspeed_on(use_gpu)

    @property
    def accelerator(self) -> str:
        """The device type DeepSpeed puts the model and its collectives' tensors on."""
        from deepspeed.accelerator import get_accelerator

        return get_accelerator().device_name()

    @property
    def backend(self) -> str:
        """The collective backend the process group is joined with: NCCL on GPUs, gloo on the CPU."""
        return "nccl" if self.use_gpu else "gloo"

    @quiet_collectives
    def init_distributed(self) -> None:
        """Join the process group: Ray Train's (already set up, reused) or torchrun's (from its env)."""
        self.deepspeed.init_distributed(dist_backend=self.backend)

    @quiet_collectives
    def setup(self, model: nn.Module, plan: StagePlan) -> None:
        """AdamW over the trainable parameters, cosine schedule with warmup, ZeRO as configured."""
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.stage.lr, weight_decay=self.stage.weight_decay)
        scheduler = lr_schedule(optimizer, plan)
        config = deepspeed_config(self.stage, self.use_gpu, hidden_size=llm_hidden_size(model))
        self.engine, self.optimizer, _, _ = self.deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        self.engine.train()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @quiet_collectives
    def train_micro_batch(self, batch: dict[str, torch.Tensor], num_visual_tokens: int) -> float:
        """Forward, backward and DeepSpeed's step (which applies the optimizer on the last micro-batch
        of each accumulation); returns the loss."""
        loss = self.engine(**batch, num_visual_tokens=num_visual_tokens).loss
        self.engine.backward(loss)
        self.engine.step()
        return loss.item()

    def grad_norm(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    @quiet_collectives
    def save(self, directory: Path, rank: int, state: TrainState, position: DataPosition, config: dict) -> None:
        """Every rank calls this (DeepSpeed's save is collective); `config` is the run's, kept beside."""
        checkpoint.save(self.engine, directory, rank, state, position, config)

    @quiet_collectives
    def load(self, directory: Path, rank: int) -> tuple[TrainState, DataPosition]:
        return checkpoint.restore(self.engine, directory, rank)

    @quiet_collectives
    def export_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The full weights for save_pretrained. Every rank must call it: under ZeRO-3 they gather the
        partitioned weights together (the call HF's Trainer uses); otherwise None (the module's own)."""
        if self.stage.zero_stage == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return None
