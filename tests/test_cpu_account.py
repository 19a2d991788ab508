"""The benchmarks' CPU account: a process that starts and ends inside a span is counted, not lost."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from cpu_account import CpuSampler  # noqa: E402

BURN = """
import time
start = time.process_time()
while time.process_time() - start < 0.5:
    pass
time.sleep(0.5)  # seen idle by the sampler before it ends
"""


def test_a_process_started_and_ended_inside_a_span_counts_its_cpu(tmp_path):
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    with CpuSampler(every=0.1) as sampler:
        start = sampler.snapshot()
        subprocess.run([sys.executable, str(script)], check=True)
        end = sampler.snapshot()
    span, cores = sampler.cores(start, end)
    assert 0.45 <= cores["burn.py"] * span <= 1.0  # its 0.5 CPU-s (and its interpreter's start)
    assert sampler.started(start, end)["burn.py"] == 1
