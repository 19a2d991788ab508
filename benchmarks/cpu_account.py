"""Where a benchmark's CPU goes: every process's CPU time, sampled in a thread, split by process kind.

with CpuSampler() as sampler:
    ...  # the timed work, from t0 to t1 (time.time())
span, cores = sampler.cores(t0, t1)   # {process kind: cores used} between the samples inside [t0, t1]
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

DRIVER = "this process"


class CpuSampler:
    """Every process's CPU seconds, sampled every `every` s in a thread, so that a variant's steady
    state can be split by process: the one doing the arithmetic against everything else the machine
    runs (Ray's processes, a pipeline, Serve's proxy and replicas)."""

    def __init__(self, every: float = 2.0) -> None:
        self.every, self.samples = every, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def sample(self) -> None:
        while not self.stop.is_set():
            seen = {}
            for process in psutil.process_iter(["pid", "cmdline", "name", "cpu_times"]):
                info = process.info
                if info["cpu_times"] is not None:
                    seen[info["pid"]] = (process_kind(info), info["cpu_times"].user + info["cpu_times"].system)
            self.samples.append((time.time(), seen))
            self.stop.wait(self.every)

    def cores(self, start: float, end: float) -> tuple[float, dict[str, float]]:
        """(seconds covered, cores used per process kind) between the first and last samples inside
        [start, end]."""
        inside = [(t, seen) for t, seen in self.samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0, {}
        (t0, first), (t1, last) = inside[0], inside[-1]
        used: dict[str, float] = defaultdict(float)
        for pid, (kind, cpu) in last.items():
            if pid in first:
                used[kind] += (cpu - first[pid][1]) / (t1 - t0)
        return t1 - t0, dict(used)


def process_kind(info: dict) -> str:
    """A process's name in the CPU account: Ray's process titles (ray::RayTrainWorker, ray::IDLE,
    ray::ServeReplica:app:Ingress), the executable or script otherwise."""
    if info["pid"] == os.getpid():
        return DRIVER
    words = info["cmdline"] or [info["name"] or "?"]
    if words[0].startswith("ray::"):
        return words[0].split(".")[0]
    script = next((w for w in words[1:] if w.endswith(".py")), words[0])
    return Path(script).name
