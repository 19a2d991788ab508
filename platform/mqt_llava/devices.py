"""Where a model runs for inference, decided once: GPU or CPU, and the dtype and Ray resources that
go with it. Serving tiers, evaluation actors, ablation trials' evaluation and held-out questions and
`jobs/explain.py` all load their engine through a `Placement` (`mqt_llava.inference.load_placed_engine`),
so a GPU run is bf16 on one GPU per engine everywhere, and a CPU run keeps the export's own fp32.

`use_gpu=None` means "GPUs if there are any": the Ray cluster's, decided in the driver before it
asks Ray for actors (`Placement.for_cluster`), or this process's (`Placement.here`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Placement:
    use_gpu: bool

    @classmethod
    def here(cls, use_gpu: bool | None = None) -> Placement:
        """For an engine this process loads itself."""
        return cls(torch.cuda.is_available() if use_gpu is None else use_gpu)

    @classmethod
    def for_cluster(cls, use_gpu: bool | None = None) -> Placement:
        """For actors the driver is about to ask Ray for (Ray must be initialised)."""
        if use_gpu is not None:
            return cls(use_gpu)
        import ray

        if not ray.is_initialized():
            return cls.here()
        return cls(ray.cluster_resources().get("GPU", 0) > 0)

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu else "cpu"

    @property
    def dtype(self) -> torch.dtype | None:
        """bf16 on GPU (the paper's inference precision); None on CPU: the export's own fp32."""
        return torch.bfloat16 if self.use_gpu else None

    @property
    def num_gpus(self) -> int:
        """What a Ray actor or task holding one engine asks for."""
        return 1 if self.use_gpu else 0

    def check(self) -> None:
        """Inside the process that loads the engine: a GPU placement with no GPU visible is an error
        naming the cause, not a CUDA initialisation trace."""
        if self.use_gpu and not torch.cuda.is_available():
            raise RuntimeError(
                "use_gpu is set but this process sees no GPU (torch.cuda.is_available() is False): "
                "a CPU-only torch build, no GPU on this node, or the actor was started without num_gpus"
            )
