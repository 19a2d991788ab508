"""One placement for every engine: bf16 on one GPU each where use_gpu, the export's fp32 on CPU
otherwise, asked of Ray by serving tiers and evaluation actors alike. This machine has no GPU: the
GPU side is checked through what is asked of Ray and of torch, and by benchmarks/gpu_check.py on
a GPU."""

import pytest
import torch

from mqt_llava.devices import Placement
from mqt_llava.inference import load_placed_engine
from mqt_llava.model.builder import build_model
from mqt_llava.model.export import save_export
from mqt_llava.serve.app import build
from small_model import small_spec


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    path = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    save_export(build_model(small_spec()), path)
    return str(path)


def test_a_placement_is_bf16_on_one_gpu_or_fp32_on_cpu():
    gpu, cpu = Placement(True), Placement(False)
    assert (gpu.device, gpu.dtype, gpu.num_gpus) == ("cuda", torch.bfloat16, 1)
    assert (cpu.device, cpu.dtype, cpu.num_gpus) == ("cpu", None, 0)
    assert Placement.here() == Placement(torch.cuda.is_available())
    assert Placement.for_cluster(True) == gpu and Placement.for_cluster(False) == cpu


def test_a_gpu_placement_without_a_gpu_names_the_cause(export):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="use_gpu is set but this process sees no GPU"):
        load_placed_engine(export, Placement(True))
    engine = load_placed_engine(export, Placement(False))
    assert engine.model.device.type == "cpu" and engine.model.dtype == torch.float32


def tier_deployments(app) -> dict:
    ingress = app._bound_deployment  # Serve's bound application: the ingress, its tiers in its init args
    return {name: tier._bound_deployment for name, tier in ingress.init_args[3].items()}


def test_serving_tiers_ask_ray_for_a_gpu_each_and_load_their_engine_there(export):
    spec = {"model": export, "tiers": [{"name": "fast", "visual_tokens": 2}, {"name": "full", "visual_tokens": "M"}]}
    on_gpu = tier_deployments(build(spec | {"use_gpu": True}))
    assert {name: t.ray_actor_options["num_gpus"] for name, t in on_gpu.items()} == {"fast": 1, "full": 1}
    assert all(t.init_args[3] is True for t in on_gpu.values())  # Tier(model, engine, threads, use_gpu)
    on_cpu = tier_deployments(build(spec | {"use_gpu": False}))
    assert all(t.ray_actor_options["num_gpus"] == 0 and t.init_args[3] is False for t in on_cpu.values())
