"""The 7B path checked on one GPU, without Ray: what a lent GPU machine (one H200, torch with CUDA,
no Ray, no DeepSpeed, no network) can tell before anyone pays for a cluster.

    python benchmarks/gpu_check.py prepare --out build/gpu_check       # here: wheels, toy shards, configs
    # there (build/gpu_check carried, at most 64 MiB):
    python3 -m pip install -q --no-index --no-deps --target /tmp/site build/gpu_check/wheels/*.whl
    PYTHONPATH=/tmp/site:platform python3 benchmarks/gpu_check.py run --from build/gpu_check --out $OUT

`run` prints, in at most about 8 minutes on an H200:
  (a) the llava-7b architecture with random weights in bf16: one stage-2 forward and backward with
      gradient checkpointing at the stage's longest sequence, at micro-batches 1 and 8, the measured
      peak beside the memory plan's (mqt_llava.train.memory) activation estimate;
  (b) prefill latency, one image and 64 text tokens, batch 1 and 8: LLaVA-1.5's MLP at 576 tokens
      against the MQT at 256, 144, 64 and 16, the measured speed-up beside the FLOPs-predicted one;
  (c) the training loop under torchrun with NCCL and DeepSpeed (ZeRO-3, bf16) for a few steps on a
      shallow model: the loss finite and falling.
and writes them to <out>/gpu_check.json. `run --smoke` does the same on CPU with the shallow model in
place of the 7B (what tests/e2e/test_gpu_check.py runs, so the script's one shot on a GPU is not
spent on a typo). `prepare` makes what `run` needs and the machine lacks:
the wheels of this platform's pinned transformers, DeepSpeed (built here, no ops compiled) and
pydantic for Python 3.12, and Parquet shards of a small toy corpus with the stage configs.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = {  # what the GPU machine lacks (or has in another version), for its Python 3.12
    "download": ["transformers==5.23.0", "pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0",
                 "typing-inspection==0.4.5", "hjson==3.1.0", "ijson==3.6.0"],
    "build": ["deepspeed==0.19.8"],  # an sdist: built here into a pure-Python wheel (ops compile on first use)
}  # fmt: skip
SHALLOW = {  # (c)'s model: shallow, so the loop's few steps take seconds
    "name": "gpu-check",
    "vision_tower": {"architecture": {"image_size": 64, "patch_size": 8, "hidden_size": 64, "intermediate_size": 128,
                                      "num_hidden_layers": 2, "num_attention_heads": 2}},
    "llm": {"architecture": {"model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
                             "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
                             "max_position_embeddings": 512}},
    "connector": {"kind": "mqt", "num_queries": 16, "num_heads": 2},
    "max_length": 512,
}  # fmt: skip
STEPS = 30


# ---------------------------------------------------------------- prepare (this machine, with Ray)


def prepare(out: Path, wheels: bool = True) -> None:
    import shutil

    import yaml

    from mqt_llava.config import ModelSpec
    from mqt_llava.data.llava_format import RecordRules
    from mqt_llava.data.prepare import PrepareJob
    from mqt_llava.data.prepare import prepare as prepare_shards
    from mqt_llava.model.builder import max_visual_tokens
    from mqt_llava.ray_runtime import init_ray
    from mqt_llava.toy.corpus import INSTRUCT_JSON, CorpusSpec, write_corpus

    if wheels:
        folder = out / "wheels"
        folder.mkdir(parents=True, exist_ok=True)
        target = ["--python-version", "3.12", "--platform", "manylinux2014_x86_64", "--only-binary=:all:"]
        pip = [sys.executable, "-m", "pip", "-q"]
        subprocess.run([*pip, "download", "--no-deps", "-d", str(folder), *target, *WHEELS["download"]], check=True)
        # DeepSpeed's build imports torch: no isolation (an isolated build would pull an unpinned CUDA torch).
        subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(folder), *WHEELS["build"]],
                       check=True, env=os.environ | {"DS_BUILD_OPS": "0"})  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    model = ModelSpec.model_validate(SHALLOW)
    (out / "model.yaml").write_text(yaml.safe_dump(model.model_dump()))
    corpus = write_corpus(out / "corpus", CorpusSpec(seed=3, num_pretrain=0, num_instruct=2000, num_eval=0),
                          log=lambda _: None)  # fmt: skip
    init_ray(num_cpus=2)
    rules = RecordRules("vicuna_v1", model.max_length, max_visual_tokens(model))
    prepare_shards(PrepareJob(str(corpus / INSTRUCT_JSON), str(corpus), str(out / "665k"), model.tokenizer, rules),
                   log=lambda _: None)  # fmt: skip
    stage = dict(model="./model.yaml", stage="stage2", template="vicuna_v1", data="./665k", num_workers=1,
                 global_batch_size=16, micro_batch_size=16, lr=1e-3, zero_stage=3, bf16=True, max_steps=STEPS,
                 log_every=1, checkpoint_every=STEPS, keep_checkpoints=1, shuffle_buffer=64)  # fmt: skip
    (out / "stage2.yaml").write_text(yaml.safe_dump(stage))
    shutil.rmtree(corpus)  # the shards hold the images: keep the carried folder small
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"prepared {out}: {size:.1f} MiB (the device carries at most 64)")


# ---------------------------------------------------------------- run (the GPU machine, no Ray)


class Device:
    """CUDA, or the CPU for --smoke (where memory figures are not measured: reported as 0)."""

    def __init__(self, smoke: bool) -> None:
        import torch

        self.torch, self.name = torch, "cpu" if smoke else "cuda"

    def sync(self) -> None:
        if self.name == "cuda":
            self.torch.cuda.synchronize()

    def reset_peak(self) -> int:
        """Bytes allocated now, after resetting the peak."""
        if self.name != "cuda":
            return 0
        self.sync()
        self.torch.cuda.reset_peak_memory_stats()
        return self.torch.cuda.memory_allocated()

    def peak(self) -> int:
        self.sync()
        return self.torch.cuda.max_memory_allocated() if self.name == "cuda" else 0

    def median_ms(self, fn, warmup: int = 3, repeats: int = 10) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            self.sync()
            started = time.perf_counter()
            fn()
            self.sync()
            times.append(1000 * (time.perf_counter() - started))
        return statistics.median(times)


def model_inputs(model, micro: int, text_tokens: int, device):
    """`micro` samples of one image placeholder and `text_tokens` text tokens (random ids), labels on all."""
    import torch

    vocab = model.config.text_config.vocab_size
    ids = torch.randint(3, vocab, (micro, text_tokens + 1), device=device)
    ids[:, 1] = model.config.image_token_index
    size = model.config.vision_config.image_size
    pixels = torch.randint(0, 256, (micro, 3, size, size), dtype=torch.uint8, device=device)
    return ids, pixels


def check_memory(device: Device, log) -> dict:
    """(a): one stage-2 forward and backward of the 7B with gradient checkpointing."""
    import torch

    from mqt_llava.config import ModelSpec, StageSpec, load_config, model_config_path
    from mqt_llava.model.builder import build_model
    from mqt_llava.model.stages import configure_trainable
    from mqt_llava.train.memory import GIB, ModelCounts, activation_lines

    if device.name == "cuda":
        spec = load_config(ModelSpec, model_config_path("llava-7b"))
        length = load_config(StageSpec, "llava-7b/stage2").max_length or spec.max_length
    else:
        spec = ModelSpec.model_validate(SHALLOW)
        length = spec.max_length
    started = time.perf_counter()
    model = build_model(spec, device=device.name, random_weights=True).model.to(torch.bfloat16)
    configure_trainable(model, "stage2")
    model.language_model.activation_checkpointing_enable()
    model.train()
    log(f"(a) {spec.name} built with random weights in bf16 in {time.perf_counter() - started:.0f} s")
    counts = ModelCounts.of(spec, "stage2")
    M = model.max_visual_tokens
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    rows = []
    for micro in (1, 8):
        ids, pixels = model_inputs(model, micro, length - M, device.name)
        model.zero_grad(set_to_none=True)
        before = device.reset_peak()
        output = model(input_ids=ids, pixel_values=pixels, labels=ids.masked_fill(ids < 0, -100), num_visual_tokens=M)
        output.loss.backward()
        loss = output.loss.item()
        del output
        peak = device.peak()
        estimate = sum(line.bytes for line in activation_lines(counts, micro, length, True))
        measured = peak - before - trained  # what the step added beyond the weights, less the gradients it kept
        figures = {"peak": peak, "weights": params, "gradients": trained, "activations_measured": measured,
                   "activations_planned": estimate}  # fmt: skip
        rows.append(
            {"micro_batch": micro, "tokens": micro * length, "loss": loss}
            | {f"{k}_gib": v / GIB for k, v in figures.items()}
        )
        log(f"(a) micro-batch {micro} x {length} tokens: loss {loss:.3f}, peak {peak / GIB:.1f} GiB "
            f"(weights {params / GIB:.1f}, gradients {trained / GIB:.1f}); activations measured {measured / GIB:.1f} "
            f"GiB, planned {estimate / GIB:.1f} GiB (ratio {measured / estimate:.2f})")  # fmt: skip
        assert math.isfinite(loss), "the loss is not finite"
    model.zero_grad(set_to_none=True)
    return {"model": model, "spec": spec, "memory": rows}


def check_prefill(model, spec, device: Device, log) -> list[dict]:
    """(b): prefill latency of LLaVA-1.5's MLP at N tokens against the MQT at its budgets."""
    import torch

    from mqt_llava.eval.flops import FlopsModel
    from mqt_llava.model.connectors import build_connector

    model.eval()
    vision, llm = model.config.vision_config, model.config.text_config
    grid = (vision.image_size // vision.patch_size) ** 2
    mqt = model.connector
    mlp = build_connector({"kind": "mlp"}, vision.hidden_size, llm.hidden_size, grid).to(device.name, torch.bfloat16)
    budgets = [m for m in (256, 144, 64, 16) if m <= mqt.max_tokens]
    flops = FlopsModel(spec)
    baseline_flops = flops.llava_mlp(64).total
    rows = []
    for batch in (1, 8):
        ids, pixels = model_inputs(model, batch, 64, device.name)
        timed = {}
        for name, connector, m in [("MLP", mlp, grid)] + [("MQT", mqt, m) for m in budgets]:
            model.connector = connector
            with torch.inference_mode():
                timed[(name, m)] = device.median_ms(functools.partial(
                    model, input_ids=ids, pixel_values=pixels, num_visual_tokens=m, logits_to_keep=1
                ))  # fmt: skip
        base = timed[("MLP", grid)]
        for (name, m), ms in timed.items():
            predicted = baseline_flops / (flops.llava_mlp(64).total if name == "MLP" else flops.at_budget(m, 64).total)
            rows.append({"batch": batch, "connector": name, "visual_tokens": m, "ms": ms,
                         "speedup_measured": base / ms, "speedup_flops": predicted})  # fmt: skip
            log(
                f"(b) batch {batch}, {name} at {m:>3} tokens: {ms:7.2f} ms, speed-up {base / ms:.2f}x "
                f"(FLOPs predict {predicted:.2f}x)"
            )
    model.connector = mqt
    return rows


def check_torchrun(prepared: Path, device: Device, log) -> dict:
    """(c): the training loop under torchrun, NCCL and DeepSpeed ZeRO-3 in bf16, a few steps."""
    runs = Path(tempfile.mkdtemp(prefix="gpu-check-runs-"))  # fresh: the same run name again would resume
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", str(REPO / "jobs/stage2.py"),
               "--config", "stage2.yaml", "--storage", str(runs), "--name", "gpu-check"]  # fmt: skip
    started = time.perf_counter()
    # The job runs in the prepared folder: the import path must not depend on the working directory.
    paths = [
        str(REPO / "platform"),
        *(str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p),
    ]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run(command, cwd=prepared, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    losses = [float(x) for x in re.findall(r"\[gpu-check\] step \d+/\d+ loss (\S+)", output)]
    first, last = statistics.mean(losses[:5] or [math.nan]), statistics.mean(losses[-5:] or [math.nan])
    result = {"returncode": done.returncode, "seconds": time.perf_counter() - started, "losses": losses,
              "on_gpu": "on GPU" in output, "finite": all(math.isfinite(x) for x in losses),
              "falling": last < first}  # fmt: skip
    backend = "NCCL + DeepSpeed ZeRO-3 bf16" if device.name == "cuda" else "gloo + DeepSpeed ZeRO-3 fp32"
    log(f"(c) torchrun + {backend}: rc {done.returncode}, {len(losses)} steps, loss {first:.3f} "
        f"(first 5) -> {last:.3f} (last 5), finite {result['finite']}, on GPU {result['on_gpu']}")  # fmt: skip
    if done.returncode or not losses:
        log(output[-4000:])
    return result


def run(prepared: Path, out: Path, smoke: bool = False) -> int:
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    device = Device(smoke)
    name = "CPU (smoke: the shallow model in place of the 7B)" if smoke else torch.cuda.get_device_name()
    results: dict = {"device": name, "torch": torch.__version__, "transformers": transformers.__version__}
    lines: list[str] = []

    def log(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    log(f"{results['device']}: torch {results['torch']}, transformers {results['transformers']}")
    checked = check_memory(device, log)
    results["memory"] = checked["memory"]
    results["prefill"] = check_prefill(checked["model"], checked["spec"], device, log)
    del checked
    if not smoke:
        torch.cuda.empty_cache()
    results["torchrun"] = check_torchrun(prepared.resolve(), device, log)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    (out / "gpu_check.txt").write_text("\n".join(lines) + "\n")
    loop = results["torchrun"]
    ok = loop["returncode"] == 0 and loop["finite"] and loop["falling"] and loop["on_gpu"] == (not smoke)
    log(f"results: {out / 'gpu_check.json'}; {'all three ran' if ok else 'the torchrun check FAILED'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    made = sub.add_parser("prepare", help="on this machine: wheels, shards, configs")
    made.add_argument("--out", type=Path, default=Path("build/gpu_check"))
    made.add_argument("--no-wheels", action="store_true", help="shards and configs only (for run --smoke)")
    ran = sub.add_parser("run", help="on the GPU machine")
    ran.add_argument("--from", dest="prepared", type=Path, default=Path("build/gpu_check"))
    ran.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/gpu_check_out")))
    ran.add_argument("--smoke", action="store_true", help="on CPU, the shallow model in place of the 7B")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.out, wheels=not args.no_wheels)
        return 0
    return run(args.prepared, args.out, args.smoke)


if __name__ == "__main__":
    raise SystemExit(main())
