"""Where a benchmark's CPU goes: every process's CPU time, sampled in a thread, split by process kind.

with CpuSampler() as sampler:
    ...  # the timed work, from t0 to t1 (time.time())
span, cores = sampler.cores(t0, t1)   # {process kind: cores used} between the samples inside [t0, t1]
t0 = sampler.snapshot()                # or a span bounded by samples taken on demand
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import psutil

DRIVER = "this process"
FORKED = "forks of this process"  # e.g. a torch DataLoader's workers
SPAWNED = "multiprocessing pool"  # processes started by multiprocessing's spawn
DRIVER_CMDLINE = psutil.Process().cmdline()


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
            self.snapshot()
            self.stop.wait(self.every)

    def snapshot(self) -> float:
        """Sample every process now (also from the benchmark's thread, to bound a span exactly);
        returns the sample's time."""
        seen = {}
        for process in psutil.process_iter(["pid", "cmdline", "name", "cpu_times"]):
            info = process.info
            if info["cpu_times"] is not None:
                seen[info["pid"]] = (process_kind(info), info["cpu_times"].user + info["cpu_times"].system)
        now = time.time()
        self.samples.append((now, seen))
        return now

    def inside(self, start: float, end: float) -> list[tuple[float, dict]]:
        """The samples taken in [start, end], in time order (the thread's and snapshots' interleave)."""
        return sorted(((t, seen) for t, seen in self.samples if start <= t <= end), key=lambda sample: sample[0])

    def cores(self, start: float, end: float) -> tuple[float, dict[str, float]]:
        """(seconds covered, cores used per process kind) between the first and last samples inside
        [start, end]. A process that ended in between counts up to the last sample that saw it."""
        inside = self.inside(start, end)
        if len(inside) < 2:
            return 0.0, {}
        (t0, first), (t1, _) = inside[0], inside[-1]
        latest = {pid: seen for _, sample in inside for pid, seen in sample.items()}  # the last sample with each pid
        used: dict[str, float] = defaultdict(float)
        for pid, (kind, cpu) in latest.items():  # a process started in between: all its CPU is inside
            used[kind] += (cpu - (first[pid][1] if pid in first else 0.0)) / (t1 - t0)
        return t1 - t0, dict(used)

    def started(self, start: float, end: float) -> dict[str, int]:
        """{process kind: processes} that appeared between the first and last samples inside [start, end]."""
        inside = self.inside(start, end)
        if len(inside) < 2:
            return {}
        first = inside[0][1]
        new = {pid: kind for _, sample in inside for pid, (kind, _) in sample.items() if pid not in first}
        return dict(Counter(new.values()))


def process_kind(info: dict) -> str:
    """A process's name in the CPU account: Ray's process titles (ray::RayTrainWorker, ray::IDLE,
    ray::ServeReplica:app:Ingress), the executable or script otherwise."""
    if info["pid"] == os.getpid():
        return DRIVER
    words = info["cmdline"] or [info["name"] or "?"]
    if words[0].startswith("ray::"):
        return words[0].split(".")[0]
    if words == DRIVER_CMDLINE:
        return FORKED
    if any("multiprocessing.spawn" in w for w in words):
        return SPAWNED
    script = next((w for w in words[1:] if w.endswith(".py")), words[0])
    return Path(script).name
