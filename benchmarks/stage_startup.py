"""What a small stage job pays around its few steps: runs of a tiny stage 2 (random weights, a synthetic
LLaVA-665K-like corpus, `--steps` optimizer steps) one after another on one Ray instance, each timed
from `run_stage` to its return, with the processes started during it and every process kind's CPU
seconds (benchmarks/cpu_account.py). Beside them, what each kind of process imports before it can do
anything, timed as `python -c "import ..."` against bare `import ray`: the part of start-up that is
the platform's own.

    python benchmarks/stage_startup.py                       # 3 runs of 2 steps
    python benchmarks/stage_startup.py --runs 5 --steps 4

The first run also starts Ray's own processes for the session (dashboard, GCS, raylet); the later
runs are what a Tune trial or a resubmitted job pays on a warm instance.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cpu_account import CpuSampler
from synthetic_shards import RANDOM_INIT, synthetic_shards
from train_throughput import stage_run  # the same tiny stage 2 the throughput benchmark times

from mqt_llava.config import load_config, preset_path
from mqt_llava.model.spec import ModelSpec
from mqt_llava.ray_runtime import init_ray
from mqt_llava.train.launch import run_stage

# What each kind of process imports before its first unit of work (a module per line, as Ray's
# unpickling of the functions and arguments it is handed imports them).
IMPORTS = {
    "bare Ray actor": ["ray"],
    "Ray Data tokenize task / decode actor / split coordinator": ["ray", "ray.data", "mqt_llava.data.samples"],
    "Ray Train controller": ["ray.train.torch", "mqt_llava.train.worker", "mqt_llava.train.plan"],
    "Ray Train worker": ["ray.train.torch", "mqt_llava.train.loop"],
}


def import_seconds(modules: list[str], repeats: int) -> float:
    """The median wall time of a fresh `python -c` importing `modules`."""
    script = "; ".join(f"import {m}" for m in modules)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", script], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--import-repeats", type=int, default=3)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="stage-startup-"))
    spec = load_config(ModelSpec, preset_path("tiny"), RANDOM_INIT)
    shards = synthetic_shards(spec, root, args.records)
    init_ray()
    rows = []
    with CpuSampler(every=0.5) as sampler:
        for i in range(args.runs):
            run = stage_run(shards, RANDOM_INIT, root, f"startup-{i}", argparse.Namespace(steps=args.steps, set=[]))
            start = sampler.snapshot()
            run_stage(run)
            end = sampler.snapshot()
            span, cores = sampler.cores(start, end)
            cpu = {kind: used * span for kind, used in cores.items()}
            rows.append((end - start, sum(sampler.started(start, end).values()), cpu))

    print(f"\n{args.runs} runs of {args.steps} steps, tiny stage 2, random weights, {args.records} records:")
    print("| run | wall s | processes started | CPU-s in all | top kinds (CPU-s) |\n|---:|---:|---:|---:|---|")
    for i, (wall, started, cpu) in enumerate(rows):
        top = sorted(cpu.items(), key=lambda kv: -kv[1])[:5]
        kinds = ", ".join(f"{kind} {seconds:.1f}" for kind, seconds in top)
        print(f"| {i} | {wall:.1f} | {started} | {sum(cpu.values()):.1f} | {kinds} |")

    print(f"\nImports per process kind (median of {args.import_repeats} fresh `python -c`, wall s):")
    bare = import_seconds(IMPORTS["bare Ray actor"], args.import_repeats)
    print("| process | imports | s | beyond bare `import ray` |\n|---|---|---:|---:|")
    for kind, modules in IMPORTS.items():
        seconds = bare if modules == IMPORTS["bare Ray actor"] else import_seconds(modules, args.import_repeats)
        print(f"| {kind} | {', '.join(modules)} | {seconds:.2f} | {seconds - bare:+.2f} |")
    print(f"\nruns and shards under {root}; figures and how to read them: docs/benchmarks.md (Stage start-up)")


if __name__ == "__main__":
    main()
