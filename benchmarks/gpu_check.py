"""The 7B path checked on one GPU, without Ray: what a lent GPU machine (one H100 or H200, torch 2.11
with CUDA, transformers 5.17, no Ray, no DeepSpeed, no MLflow, no network) can tell before anyone pays
for a cluster.

    python benchmarks/gpu_check.py prepare --out build/gpu_check     # here: the bundle, toy shards, configs
    # there (build/gpu_check carried, at most 64 MiB; the whole command within 600 s):
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site build/gpu_check/wheels/*.whl
    PYTHONPATH=/tmp/site python3 benchmarks/gpu_check.py run --from build/gpu_check --out $OUT

`run` runs five parts, each in its own process under its own time limit, and rewrites
<out>/gpu_check.json after each (a part that fails or runs out of time is recorded as such with what
it had measured, and the next one still runs):
  env        the machine, the package versions, and the accelerator DeepSpeed selects in a clean process;
  torchrun   the training loop under torchrun (DeepSpeed ZeRO-3, bf16, NCCL on a GPU) on a shallow
             model for a few steps: loss finite and falling, and, read inside the rank after
             DeepSpeed's set-up, the accelerator DeepSpeed selected, the engine's device, the device of
             the parameters and the process group's backend;
  inference  llava-7b with random weights in bf16 through the inference engine: generation at m = 16
             with the MQT and at the 576 tokens of LLaVA-1.5's MLP (tokens/s, peak memory), then
             prefill latency of the MLP against the MQT at 256, 144, 64 and 16 beside the FLOPs
             prediction;
  memory     one stage-2 forward and backward of llava-7b with gradient checkpointing at the stage's
             longest sequence, micro-batches 1 and 8, the measured peak beside the memory plan's;
  import     mqt_llava.model.official.import_official on a synthetic checkpoint in the official
             MQT-LLaVA-7B layout at full size (random fp16 weights, a trained-like position table):
             every key consumed, shapes equal, a forward of the import on the GPU.
"On the GPU" is read from where the parameters are and what DeepSpeed selected, never from a flag.

`run --tiny` runs every part on the CPU at toy shapes (tests/e2e/test_gpu_check*.py), so the script's
one shot on a GPU is not spent on a typo. `prepare` writes the bundle (wheels/: this project, the
pinned transformers, DeepSpeed built here with no ops compiled, pydantic, hjson, ijson), whose
completeness against the device image is tested in tests/e2e/test_gpu_check_bundle.py, and Parquet
shards of a small toy corpus with the torchrun part's stage config.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
# What the device image lacks, for its Python 3.12 (its packages: the device entry's KINDS.md).
BUNDLE = {
    "download": [
        "transformers==5.23.0",
        "pydantic==2.14.4",
        "pydantic-core==2.50.5",
        "annotated-types==0.8.0",
        "typing-inspection==0.4.5",
        "hjson==3.1.0",
        "ijson==3.6.0",
        "sentencepiece==0.2.3",
    ],  # Vicuna's tokenizer.model is converted with it
    "build": ["deepspeed==0.19.8"],  # an sdist: built here into a pure-Python wheel (ops compile on first use)
}
# What the check takes from the device image instead of carrying it (each listed there, versions as
# seen there where KINDS.md gives them): the stand-in environment of the bundle's test installs these.
DEVICE_IMAGE = [
    "torch==2.11.0",
    "transformers==5.17.0",
    "accelerate==1.15.0",
    "safetensors==0.8.0",
    "huggingface-hub==1.33.0",
    "tokenizers==0.23.2",
    "numpy==2.5.2",
    "regex",
    "typer",
    "pyyaml",
    "pillow",
    "pyarrow",
    "colorama",
    "psutil",
    "py-cpuinfo",
    "ninja",
    "msgpack",
    "nvidia-ml-py",
    "einops",
    "packaging",
    "tqdm",
    "typing-extensions",
]
BUNDLE_LIMIT = 64 * 2**20  # what one device call carries, the working tree included
# The modules the parts import, imported together by `gpu_check.py imports` (the bundle's test runs it
# in the stand-in for the device image; each part also records the packages it loaded).
GPU_PATH_MODULES = [
    "mqt_llava.train.cli",
    "mqt_llava.train.torchrun",
    "mqt_llava.train.loop",
    "mqt_llava.train.strategies.deepspeed",
    "mqt_llava.train.memory",
    "mqt_llava.inference",
    "mqt_llava.model.official",
    "mqt_llava.model.builder",
    "mqt_llava.model.stages",
    "mqt_llava.model.tokenizer",
    "transformers.models.auto.tokenization_auto",  # imported by load_pretrained_tokenizer when it runs
    "mqt_llava.eval.flops",
    "deepspeed",
    "deepspeed.runtime.zero.stage3",
    "deepspeed.runtime.zero.stage_1_and_2",
    "deepspeed.runtime.engine",
    "deepspeed.ops.adam",
    "pyarrow.parquet",
    "huggingface_hub",
    "safetensors.torch",
    "transformers",
    "PIL.Image",
    "sentencepiece",
]
SHALLOW = {  # the torchrun part's model (and every part's under --tiny): shallow, so steps take seconds
    "name": "gpu-check",
    "vision_tower": {
        "architecture": {
            "image_size": 64,
            "patch_size": 8,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        }
    },
    "llm": {
        "architecture": {
            "model_type": "llama",
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "vocab_size": 32000,
            "max_position_embeddings": 512,
        }
    },
    "connector": {"kind": "mqt", "num_queries": 16, "num_heads": 2},
    "max_length": 512,
}
STEPS = 30
# Seconds per part (run in this order); with --budget, a part gets at most what is left of it.
PARTS = {"env": 40, "torchrun": 150, "inference": 120, "memory": 100, "import": 170}
BUDGET = 570  # the device's one command runs at most 600 s: the results file is complete before then


# ---------------------------------------------------------------- prepare (this machine, with Ray)


def prepare_bundle(folder: Path, python_version: str) -> int:
    """The wheels the device image lacks, for `python_version`; returns their size in bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    target = ["--python-version", python_version, "--implementation", "cp", "--only-binary=:all:"]
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        target += ["--platform", platform]
    subprocess.run([*pip, "download", "--no-deps", "-d", str(folder), *target, *BUNDLE["download"]], check=True)
    # DeepSpeed's build imports torch, and so does this project's (setuptools only): no isolation (an
    # isolated build would pull an unpinned CUDA torch).
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(folder), *BUNDLE["build"], str(REPO)],
        check=True,
        env=os.environ | {"DS_BUILD_OPS": "0"},
    )
    return sum(p.stat().st_size for p in folder.glob("*.whl"))


def prepare(out: Path, wheels: bool, shards: bool, python_version: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if wheels:
        size = prepare_bundle(out / "wheels", python_version)
        print(f"bundle {out / 'wheels'}: {size / 2**20:.1f} MiB")
    if shards:
        prepare_shards(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"prepared {out}: {size / 2**20:.1f} MiB (a device call carries at most {BUNDLE_LIMIT // 2**20})")


def prepare_shards(out: Path) -> None:
    import shutil

    import yaml

    from mqt_llava.data.llava_format import RecordRules
    from mqt_llava.data.prepare import PrepareJob
    from mqt_llava.data.prepare import prepare as prepare_records
    from mqt_llava.model.spec import ModelSpec, max_visual_tokens
    from mqt_llava.ray_runtime import init_ray
    from mqt_llava.toy.corpus import INSTRUCT_JSON, CorpusSpec, write_corpus

    model = ModelSpec.model_validate(SHALLOW)
    (out / "model.yaml").write_text(yaml.safe_dump(model.model_dump()))
    corpus = write_corpus(
        out / "corpus", CorpusSpec(seed=3, num_pretrain=0, num_instruct=2000, num_eval=0), log=lambda _: None
    )
    init_ray(num_cpus=2)
    rules = RecordRules("vicuna_v1", model.max_length, max_visual_tokens(model))
    prepare_records(
        PrepareJob(str(corpus / INSTRUCT_JSON), str(corpus), str(out / "665k"), model.tokenizer, rules),
        log=lambda _: None,
    )
    stage = dict(
        model="./model.yaml",
        stage="stage2",
        template="vicuna_v1",
        data="./665k",
        num_workers=1,
        global_batch_size=16,
        micro_batch_size=16,
        lr=1e-3,
        zero_stage=3,
        bf16=True,
        max_steps=STEPS,
        log_every=1,
        checkpoint_every=STEPS,
        keep_checkpoints=1,
        shuffle_buffer=64,
    )
    (out / "stage2.yaml").write_text(yaml.safe_dump(stage))
    shutil.rmtree(corpus)  # the shards hold the images: keep the carried folder small


# ---------------------------------------------------------------- run: the parts, one process each


def run(prepared: Path, out: Path, tiny: bool, parts: list[str], limits: dict[str, float], budget: float) -> int:
    """Each part in its own process under its limit; results rewritten after each part."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"tiny": tiny, "parts": {}}
    started = time.monotonic()
    log_file = out / "gpu_check.log"
    log_file.write_text("")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        for name in parts:
            left = budget - (time.monotonic() - started)
            limit = min(limits[name], left)
            if left < 15:
                results["parts"][name] = {"status": "skipped", "reason": f"{left:.0f} s of the budget left"}
            else:
                results["parts"][name] = run_part(name, prepared, Path(work), tiny, limit, log_file)
            entry = results["parts"][name]
            print(f"[{name}] {entry['status']}" + (f": {entry['error']}" if entry.get("error") else ""), flush=True)
            (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    failed = [n for n, r in results["parts"].items() if r["status"] != "ok"]
    print(f"results: {out / 'gpu_check.json'}; " + (f"FAILED: {', '.join(failed)}" if failed else "every part ok"))
    return 1 if failed else 0


def run_part(name: str, prepared: Path, work: Path, tiny: bool, limit: float, log_file: Path) -> dict:
    """One part in a child process of its own session (torchrun's ranks included, so a part out of
    time is ended whole); its JSON holds what it had written when it ended."""
    record = work / f"{name}.json"
    command = [sys.executable, str(SCRIPT), "part", name, "--from", str(prepared.resolve()), "--json", str(record)]
    started = time.monotonic()
    with log_file.open("a") as log:
        log.write(f"==== {name} (limit {limit:.0f} s)\n")
        log.flush()
        child = subprocess.Popen(
            command + (["--tiny"] if tiny else []),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        try:
            returncode = child.wait(timeout=limit)
            status = "ok" if returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            returncode, status = None, "timeout"
    entry = json.loads(record.read_text()) if record.exists() else {}
    error = entry.pop("error", None)
    if status == "ok" and error:
        status = "failed"
    if status == "timeout":
        error = f"did not finish within {limit:.0f} s"
    elif status == "failed" and not error:
        error = f"exit status {returncode} (see gpu_check.log)"
    return {"status": status, "seconds": round(time.monotonic() - started, 1), "error": error} | entry


class Part:
    """What a part writes: its JSON file, rewritten at each `put`."""

    def __init__(self, path: Path, tiny: bool) -> None:
        import torch

        self.path, self.tiny, self.torch = path, tiny, torch
        self.device = "cpu" if tiny else "cuda"
        self.data: dict = {}

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.path.write_text(json.dumps(self.data, indent=2, default=str))

    def append(self, key: str, row: dict) -> None:
        self.put(key, [*self.data.get(key, []), row])

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def reset_peak(self) -> int:
        """Bytes allocated now, after resetting the peak (0 on the CPU, where it is not measured)."""
        if self.device != "cuda":
            return 0
        self.sync()
        self.torch.cuda.reset_peak_memory_stats()
        return self.torch.cuda.memory_allocated()

    def peak(self) -> int:
        self.sync()
        return self.torch.cuda.max_memory_allocated() if self.device == "cuda" else 0

    def median_s(self, fn, warmup: int = 2, repeats: int = 5) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            self.sync()
            started = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - started)
        return statistics.median(times)


GIB = 2**30


def where(model) -> dict:
    """Where the model's parameters are (all of them: one stray part on the CPU would show)."""
    devices = sorted({str(p.device) for p in model.parameters()})
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    return {
        "parameter_devices": devices,
        "parameter_dtypes": dtypes,
        "on_gpu": all(d.startswith("cuda") for d in devices),
    }


def loaded_packages() -> list[str]:
    """Top-level packages this process has imported, less the standard library's."""
    names = {name.partition(".")[0] for name in list(sys.modules)}
    return sorted(n for n in names if n not in sys.stdlib_module_names and not n.startswith("_"))


def deepspeed_accelerator() -> str | None:
    """The accelerator DeepSpeed selected in this process, or None where DeepSpeed is not imported
    (importing it here would make the choice the library is about to make)."""
    if "deepspeed" not in sys.modules:
        return None
    from deepspeed.accelerator import get_accelerator

    return get_accelerator().device_name()


def seven_b(part: Part):
    """llava-7b (the shallow model under --tiny) with random weights in bf16 on the part's device."""
    import torch

    from mqt_llava.config import load_config, model_config_path
    from mqt_llava.model.builder import build_model
    from mqt_llava.model.spec import ModelSpec

    spec = ModelSpec.model_validate(SHALLOW) if part.tiny else load_config(ModelSpec, model_config_path("llava-7b"))
    started = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(spec, device=part.device, random_weights=True).model.to(torch.bfloat16)
    part.put("model", {"name": spec.name, "built_seconds": round(time.perf_counter() - started, 1)} | where(model))
    return model, spec


def model_inputs(model, batch: int, text_tokens: int, device: str):
    """`batch` samples of one image placeholder and `text_tokens` text tokens (random ids)."""
    import torch

    vocab = model.config.text_config.vocab_size
    ids = torch.randint(3, vocab, (batch, text_tokens + 1), device=device)
    ids[:, 1] = model.config.image_token_index
    size = model.config.vision_config.image_size
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)
    return ids, pixels


def part_env(part: Part, prepared: Path) -> None:
    import importlib.metadata as metadata
    import platform
    import shutil

    import torch

    versions = {}
    for name in (
        "torch",
        "transformers",
        "deepspeed",
        "pydantic",
        "accelerate",
        "safetensors",
        "tokenizers",
        "pyarrow",
        "mqt-llava",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    part.put("python", platform.python_version())
    part.put("versions", versions)
    cuda = torch.cuda.is_available()
    part.put("cuda_available", cuda)
    if cuda:
        props = torch.cuda.get_device_properties(0)
        part.put(
            "gpu",
            {
                "name": props.name,
                "memory_gib": props.total_memory / GIB,
                "capability": f"{props.major}.{props.minor}",
                "cuda": torch.version.cuda,
            },
        )
    part.put("disk_free_gib", shutil.disk_usage(tempfile.gettempdir()).free / GIB)
    part.put("ds_accelerator_env", os.environ.get("DS_ACCELERATOR"))
    import deepspeed  # a clean process: what DeepSpeed selects on this machine left to itself

    part.put("deepspeed_accelerator", deepspeed.accelerator.get_accelerator().device_name())
    if not part.tiny and not cuda:
        raise RuntimeError("torch sees no CUDA device")


def part_torchrun(part: Part, prepared: Path) -> None:
    """The loop under torchrun on the prepared toy shards; the rank's own account of its devices."""
    # Fresh (the same run name again would resume), in the run's work folder (removed after the run).
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=part.path.parent))
    probe = part.path.with_suffix(".probe.json")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "1",
        str(SCRIPT),
        "rank",
        "--probe",
        str(probe),
        "--",
        "--config",
        "stage2.yaml",
        "--storage",
        str(runs),
        "--name",
        "gpu-check",
    ]
    started = time.perf_counter()
    # The job runs in the prepared folder: the import path must not depend on the working directory.
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(command, cwd=prepared, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    print(output[-6000:], flush=True)
    losses = [float(x) for x in re.findall(r"\[gpu-check\] step \d+/\d+ loss (\S+)", output)]
    first, last = statistics.mean(losses[:5] or [math.nan]), statistics.mean(losses[-5:] or [math.nan])
    rank = json.loads(probe.read_text()) if probe.exists() else {}
    part.put("rank", rank)
    finite = all(math.isfinite(x) for x in losses)
    part.put(
        "loop",
        {
            "returncode": done.returncode,
            "seconds": round(time.perf_counter() - started, 1),
            "losses": losses,
            "finite": finite,
            "falling": last < first,
        },
    )
    problems = []
    if done.returncode:
        problems.append(f"torchrun exit status {done.returncode}")
    if len(losses) < STEPS * 2 // 3 or not finite or not last < first:
        problems.append(f"loss not finite and falling over {len(losses)} steps ({first:.3f} -> {last:.3f})")
    expected = "cpu" if part.tiny else "cuda"
    if rank.get("deepspeed_accelerator") != expected or not rank.get("engine_device", "").startswith(expected):
        problems.append(
            f"DeepSpeed took {rank.get('deepspeed_accelerator')} / {rank.get('engine_device')}, not {expected}"
        )
    if rank.get("on_gpu") != (not part.tiny):
        problems.append(f"parameters on {rank.get('parameter_devices')}")
    if problems:
        part.put("error", "; ".join(problems))


def rank_main(probe: Path, argv: list[str]) -> None:
    """A torchrun rank: jobs/stage2.py's own entry, with DeepSpeed's set-up observed from inside.
    Nothing is imported ahead of the library (DeepSpeed picks its accelerator once, at its import)."""
    from mqt_llava.train.cli import main
    from mqt_llava.train.strategies import deepspeed as strategy

    setup = strategy.DeepSpeedStrategy.setup

    @functools.wraps(setup)
    def observed(self, model, plan):
        import torch.distributed as dist

        setup(self, model, plan)
        engine = self.engine
        seen = {
            "deepspeed_accelerator": deepspeed_accelerator(),
            "engine_device": str(engine.device),
            "dist_backend": dist.get_backend() if dist.is_initialized() else None,
            "strategy_accelerator": getattr(self, "accelerator", None),  # what the strategy reports
            "ds_accelerator_env": os.environ.get("DS_ACCELERATOR"),
            "packages": loaded_packages(),
        }
        # Under ZeRO-3 a parameter is a partition, held where DeepSpeed put it: that is the device read.
        seen |= where(engine.module)
        probe.write_text(json.dumps(seen, indent=2))

    strategy.DeepSpeedStrategy.setup = observed
    main("stage2", argv)


def part_inference(part: Part, prepared: Path) -> None:
    """Generation through the engine (MQT at m = 16, the MLP at its N tokens), then prefill latency."""
    import numpy as np
    import torch
    from PIL import Image

    from mqt_llava.eval.flops import FlopsModel
    from mqt_llava.inference import InferenceEngine, Request
    from mqt_llava.model.connectors import build_connector
    from mqt_llava.model.image_settings import ImageSettings
    from mqt_llava.model.tokenizer import byte_level_tokenizer

    model, spec = seven_b(part)
    vision, llm = model.config.vision_config, model.config.text_config
    grid = (vision.image_size // vision.patch_size) ** 2
    mqt = model.connector
    mlp = build_connector({"kind": "mlp"}, vision.hidden_size, llm.hidden_size, grid).to(part.device, torch.bfloat16)
    # Random weights and no hub: a byte-level tokenizer (ids within the 7B vocabulary) stands in for
    # Vicuna's; EOS is suppressed so every row decodes exactly `new_tokens` (the same work per row).
    engine = InferenceEngine(model, byte_level_tokenizer(), ImageSettings.square_of(vision.image_size))
    rng = np.random.default_rng(0)
    new_tokens = 4 if part.tiny else 32
    for batch_size in (1, 8):
        images = [Image.fromarray(rng.integers(0, 256, (336, 336, 3), dtype=np.uint8)) for _ in range(batch_size)]
        batch = engine.prepare([Request("Describe the image in detail.", image) for image in images])
        for name, connector, m in (("MQT", mqt, 16), ("MLP", mlp, grid)):
            model.connector = connector
            before = part.reset_peak()
            seconds = part.median_s(lambda: engine.decode(batch, m, new_tokens, min_new_tokens=new_tokens))  # noqa: B023
            peak = part.peak()
            row = {
                "connector": name,
                "visual_tokens": m,
                "batch": batch_size,
                "new_tokens": new_tokens,
                "seconds": seconds,
                "tokens_per_s": batch_size * new_tokens / seconds,
                "peak_gib": peak / GIB,
                "peak_over_weights_gib": (peak - before) / GIB,
            }
            part.append("generate", row)
            print(f"generate {row}", flush=True)
    model.connector = mqt
    completion = engine.complete([Request("What is shown?", images[0])], 16, max_new_tokens=4)[0]
    part.put("complete", {"prompt_tokens": completion.prompt_tokens, "finish": completion.finish_reason})

    model.connector = mqt
    budgets = [m for m in (256, 144, 64, 16) if m <= mqt.max_tokens]
    flops = FlopsModel(spec)
    baseline = flops.llava_mlp(64).total
    for batch_size in (1, 8):
        ids, pixels = model_inputs(model, batch_size, 64, part.device)
        timed = {}
        for name, connector, m in [("MLP", mlp, grid)] + [("MQT", mqt, m) for m in budgets]:
            model.connector = connector
            with torch.inference_mode():
                timed[(name, m)] = part.median_s(
                    functools.partial(model, input_ids=ids, pixel_values=pixels, num_visual_tokens=m, logits_to_keep=1)
                )
        base = timed[("MLP", grid)]
        for (name, m), seconds in timed.items():
            predicted = baseline / (baseline if name == "MLP" else flops.at_budget(m, 64).total)
            part.append(
                "prefill",
                {
                    "batch": batch_size,
                    "connector": name,
                    "visual_tokens": m,
                    "ms": 1000 * seconds,
                    "speedup_measured": base / seconds,
                    "speedup_flops": predicted,
                },
            )
    model.connector = mqt
    if not part.tiny and not where(model)["on_gpu"]:
        part.put("error", "the model's parameters are not all on the GPU")


def part_memory(part: Part, prepared: Path) -> None:
    """One stage-2 forward and backward with gradient checkpointing at the stage's longest sequence."""
    from mqt_llava.config import load_config
    from mqt_llava.model.stages import configure_trainable
    from mqt_llava.train.memory import ModelCounts, activation_lines
    from mqt_llava.train.spec import StageSpec

    model, spec = seven_b(part)
    length = spec.max_length if part.tiny else (load_config(StageSpec, "llava-7b/stage2").max_length or spec.max_length)
    configure_trainable(model, "stage2")
    model.language_model.activation_checkpointing_enable()
    model.train()
    counts = ModelCounts.of(spec, "stage2")
    M = model.max_visual_tokens
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    for micro in (1, 8):
        ids, pixels = model_inputs(model, micro, length - M, part.device)
        model.zero_grad(set_to_none=True)
        before = part.reset_peak()
        output = model(input_ids=ids, pixel_values=pixels, labels=ids.masked_fill(ids < 0, -100), num_visual_tokens=M)
        output.loss.backward()
        loss = output.loss.item()
        del output
        peak = part.peak()
        planned = sum(line.bytes for line in activation_lines(counts, micro, length, True))
        measured = peak - before - trained  # what the step added beyond the weights, less the gradients it kept
        part.append(
            "steps",
            {
                "micro_batch": micro,
                "tokens": micro * length,
                "loss": loss,
                "peak_gib": peak / GIB,
                "weights_gib": params / GIB,
                "gradients_gib": trained / GIB,
                "activations_measured_gib": measured / GIB,
                "activations_planned_gib": planned / GIB,
            },
        )
        if not math.isfinite(loss):
            part.put("error", f"loss {loss} at micro-batch {micro}")
            return
    if not part.tiny and not where(model)["on_gpu"]:
        part.put("error", "the model's parameters are not all on the GPU")


def official_sincos(width: int, side: int):
    """The official query table's layout, from its published formula: a 1D sin-cos code of the
    column index in the first half of the channels, of the row index in the second."""
    import numpy as np

    def code(positions, dims):
        frequencies = 1.0 / 10000 ** (np.arange(dims // 2, dtype=np.float64) / (dims / 2))
        angles = np.outer(positions, frequencies)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    rows, cols = np.divmod(np.arange(side * side), side)
    return np.concatenate([code(cols, width // 2), code(rows, width // 2)], axis=1)


def synthetic_official(part: Part, spec, root: Path) -> dict:
    """A checkpoint in the official MQT-LLaVA-7B layout at `spec`'s shapes (LLaVA's LlavaLlama: the
    Llama keys, `model.query_abstractor.*` as the official Resampler holds them, config.json with
    the `mm_*` fields, the tokenizer files) with random fp16 weights, and a CLIP tower folder.
    Returns the checkpoint's tensors (on the CPU) by key."""
    import huggingface_hub
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from mqt_llava.model.tokenizer import byte_level_tokenizer

    llm = dict(spec.llm.architecture)
    llm.pop("model_type", None)
    llama = LlamaConfig(**llm)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlamaForCausalLM(llama).state_dict().items()}
    vision = CLIPVisionConfig(**dict(spec.vision_tower.architecture))
    width, M = vision.hidden_size, spec.connector.num_queries
    side = math.isqrt(M)
    shapes |= {
        f"model.query_abstractor.{k}": s
        for k, s in {
            "query": (M, width),
            "pos_embed": (M, width),
            "attn.in_proj_weight": (3 * width, width),
            "attn.in_proj_bias": (3 * width,),
            "attn.out_proj.weight": (width, width),
            "attn.out_proj.bias": (width,),
            "ln_q.weight": (width,),
            "ln_q.bias": (width,),
            "ln_k.weight": (width,),
            "ln_k.bias": (width,),
            "ln_v.weight": (width,),
            "ln_v.bias": (width,),
            "proj": (width, llama.hidden_size),
        }.items()
    }
    generator = torch.Generator(part.device).manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        values = torch.randn(shape, generator=generator, device=part.device, dtype=torch.float16) * 0.02
        if key.endswith(("norm.weight", "ln_q.weight", "ln_k.weight", "ln_v.weight")):
            values += 1
        state[key] = values.cpu()
    # Stage 1 trains the table: the released one is the sin-cos start moved a little.
    table = torch.from_numpy(official_sincos(width, side)).to(torch.float16)
    state["model.query_abstractor.pos_embed"] = table + 0.01 * state["model.query_abstractor.pos_embed"]
    checkpoint = root / "checkpoint"
    checkpoint.mkdir()
    huggingface_hub.save_torch_state_dict(state, checkpoint, max_shard_size="5GB")
    config = llama.to_dict() | {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "pad",
        "tokenizer_model_max_length": 2048,
        "torch_dtype": "float16",
    }
    (checkpoint / "config.json").write_text(json.dumps(config, indent=2))
    byte_level_tokenizer().save_pretrained(checkpoint)
    tower = root / "clip"
    CLIPVisionModel(vision).save_pretrained(tower)
    size = {"shortest_edge": vision.image_size}
    CLIPImageProcessor(size=size, crop_size={"height": vision.image_size, "width": vision.image_size}).save_pretrained(
        tower
    )
    return state


def part_import(part: Part, prepared: Path) -> None:
    """The importer's public entry on a synthetic official checkpoint; every key accounted for."""
    import torch

    from mqt_llava.config import load_config, model_config_path
    from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration
    from mqt_llava.model.official import import_official
    from mqt_llava.model.spec import ModelSpec

    spec = ModelSpec.model_validate(SHALLOW) if part.tiny else load_config(ModelSpec, model_config_path("llava-7b"))
    root = Path(tempfile.mkdtemp(prefix="import-", dir=part.path.parent))  # 30 GB at 7B: removed after the run
    started = time.perf_counter()
    state = synthetic_official(part, spec, root)
    part.put(
        "checkpoint",
        {
            "keys": len(state),
            "parameters": sum(v.numel() for v in state.values()),
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    started = time.perf_counter()
    import_official(root / "checkpoint", root / "export", vision_tower=str(root / "clip"))
    part.put("import_seconds", round(time.perf_counter() - started, 1))

    model = MQTLlavaForConditionalGeneration.from_pretrained(root / "export")
    llama = model.language_model.state_dict()
    missing, wrong_shape, unequal = [], [], []
    for key, value in state.items():
        if key.startswith("model.query_abstractor."):
            continue
        if key not in llama:
            missing.append(key)
        elif llama[key].shape != value.shape:
            wrong_shape.append(key)
        elif not torch.equal(llama[key].float(), value.float()):
            unequal.append(key)
    # The connector holds the abstractor's tensors permuted, split and transposed (the importer's
    # business): every value of every official tensor, and nothing else, must be among its
    # parameters, which sorting all values of each side shows whatever the layout.
    official = [v.float().flatten() for k, v in state.items() if k.startswith("model.query_abstractor.")]
    ours = [p.detach().float().flatten() for p in model.connector.parameters()]
    official_values, our_values = torch.cat(official).sort().values, torch.cat(ours).sort().values
    consumed = official_values.shape == our_values.shape and bool(torch.equal(official_values, our_values))
    part.put(
        "keys",
        {
            "llama_missing": missing[:5],
            "llama_wrong_shape": wrong_shape[:5],
            "llama_unequal": unequal[:5],
            "connector_values": [official_values.numel(), our_values.numel()],
            "connector_consumed": consumed,
        },
    )
    del llama, state
    model = model.to(part.device, torch.bfloat16).eval()
    ids, pixels = model_inputs(model, 1, 16, part.device)
    with torch.inference_mode():
        logits = model(input_ids=ids, pixel_values=pixels, num_visual_tokens=16).logits
    finite = bool(torch.isfinite(logits).all())
    part.put("forward", {"logits_shape": list(logits.shape), "finite": finite} | where(model))
    problems = [
        f"{len(v)} Llama keys {what}"
        for what, v in (("missing", missing), ("of another shape", wrong_shape), ("unequal", unequal))
        if v
    ]
    if not consumed:
        problems.append("the connector's parameters are not the official abstractor's values")
    if not finite:
        problems.append("the forward's logits are not finite")
    if not part.tiny and not where(model)["on_gpu"]:
        problems.append("the imported model's parameters are not all on the GPU")
    if problems:
        part.put("error", "; ".join(problems))


PART_FUNCTIONS = {
    "env": part_env,
    "torchrun": part_torchrun,
    "inference": part_inference,
    "memory": part_memory,
    "import": part_import,
}


def part_main(name: str, prepared: Path, record: Path, tiny: bool) -> int:
    part = Part(record, tiny)
    part.put("device", "cpu (tiny shapes)" if tiny else "cuda")
    try:
        PART_FUNCTIONS[name](part, prepared)
    except Exception as exc:  # recorded for the results file; the traceback goes to the log
        import traceback

        traceback.print_exc()
        part.put("error", f"{type(exc).__name__}: {exc}"[:2000])
    part.put("packages", loaded_packages())
    return 1 if "error" in part.data else 0


def imports_main() -> int:
    """Import every module of the GPU path; print the top-level packages that took."""
    import importlib

    for name in GPU_PATH_MODULES:
        importlib.import_module(name)
    print(json.dumps(loaded_packages()))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    made = sub.add_parser("prepare", help="on this machine: the bundle of wheels, shards, configs")
    made.add_argument("--out", type=Path, default=Path("build/gpu_check"))
    made.add_argument("--no-wheels", action="store_true", help="no bundle (a --tiny run needs none)")
    made.add_argument("--no-shards", action="store_true", help="the bundle only")
    made.add_argument("--python-version", default="3.12", help="the device's Python (binary wheels differ)")
    ran = sub.add_parser("run", help="on the GPU machine: every part, each in its own process")
    ran.add_argument("--from", dest="prepared", type=Path, default=Path("build/gpu_check"))
    ran.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/gpu_check_out")))
    ran.add_argument("--tiny", action="store_true", help="on the CPU at toy shapes (the dry run)")
    ran.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ran.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS", help="a part's time limit")
    ran.add_argument("--budget", type=float, default=BUDGET, help="seconds for all parts together")
    one = sub.add_parser("part", help="one part in this process (what run starts)")
    one.add_argument("name", choices=list(PARTS))
    one.add_argument("--from", dest="prepared", type=Path, required=True)
    one.add_argument("--json", type=Path, required=True)
    one.add_argument("--tiny", action="store_true")
    rank = sub.add_parser("rank", help="a torchrun rank of the torchrun part")
    rank.add_argument("--probe", type=Path, required=True)
    rank.add_argument("job", nargs=argparse.REMAINDER, help="-- then jobs/stage2.py's arguments")
    sub.add_parser("imports", help="import every module of the GPU path")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, not args.no_wheels, not args.no_shards, args.python_version)
        return 0
    if args.command == "part":
        return part_main(args.name, args.prepared, args.json, args.tiny)
    if args.command == "rank":
        rank_main(args.probe, [a for a in args.job if a != "--"])
        return 0
    if args.command == "imports":
        return imports_main()
    parts = [p for p in args.parts.split(",") if p]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"--parts: unknown {sorted(unknown)}; the parts are {', '.join(PARTS)}")
    limits = dict(PARTS)
    for item in args.limit:
        name, _, seconds = item.partition("=")
        if name not in PARTS:
            parser.error(f"--limit {item}: no part {name}")
        limits[name] = float(seconds)
    return run(args.prepared, args.out, args.tiny, parts, limits, args.budget)


if __name__ == "__main__":
    raise SystemExit(main())
