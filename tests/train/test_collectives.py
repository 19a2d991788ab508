"""The training loop's own collectives run on the device it trains on.

On GPUs Ray Train starts the process group with NCCL, which serves only CUDA tensors. This machine
has no GPU, so a process group is registered that, like NCCL, serves one device type only: "meta"
stands in for CUDA. Under it a CPU tensor fails exactly as under NCCL, which is how the loop's
float64 CPU sums would have crashed the first optimizer step of every GPU run.
"""

import pytest
import torch
import torch.distributed as dist
from torch._C._distributed_c10d import FakeProcessGroup
from torch.testing._internal.distributed.fake_pg import FakeStore

from mqt_llava.train import loop

ACCELERATOR_ONLY = "accelerator_only"


@pytest.fixture
def accelerator_only_group():
    if ACCELERATOR_ONLY not in dist.Backend.backend_list:
        dist.Backend.register_backend(
            ACCELERATOR_ONLY,
            lambda store, rank, size, timeout: FakeProcessGroup._create_internal(rank, size),
            devices=["meta"],
        )
    dist.init_process_group(ACCELERATOR_ONLY, store=FakeStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_group_serving_one_device_type_refuses_cpu_tensors_as_nccl_does(accelerator_only_group):
    with pytest.raises(RuntimeError, match="No backend type associated with device type cpu"):
        dist.all_reduce(torch.zeros(4, dtype=torch.float64))


def test_the_steps_reductions_run_on_the_training_device(accelerator_only_group):
    sums, peak = loop.reduce_over_ranks([2.5, 1, 4, 120], 512.0, torch.device("meta"))
    assert sums.device.type == peak.device.type == "meta"
    assert sums.dtype == peak.dtype == torch.float64 and sums.shape == (4,)


def test_every_collective_of_the_loop_goes_through_the_device_aware_reduction():
    """A raw collective added to the loop module would bypass the device rule above."""
    source = loop.__loader__.get_source(loop.__name__)
    body = source.split("def reduce_over_ranks", 1)
    outside = body[0] + body[1].split("\ndef ", 1)[1]
    assert "dist.all_reduce" not in outside and "dist.all_gather" not in outside and "dist.broadcast" not in outside
