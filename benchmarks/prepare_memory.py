"""Peak memory of pipelines/prepare_llava.py: bounded whatever the JSON size.

    python benchmarks/prepare_memory.py                  # 50K- and 200K-record synthetic JSONs
    python benchmarks/prepare_memory.py --records 20000 80000

Runs the real CLI as a subprocess on each JSON (the larger one includes the smaller one's records,
same image folders) and samples every 0.2 s the resident memory (RSS) of the driver and of its
whole process tree (the embedded Ray's GCS, raylet and workers). If memory were proportional to the
input, the larger run's peak would be several times the smaller's; bounded means about equal.
RSS counts shared pages (Ray's object store) once per process, so the tree figure is an upper bound.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from mqt_llava.toy.corpus import INSTRUCT_JSON, CorpusSpec, write_corpus

REPO_ROOT = Path(__file__).resolve().parents[1]  # runs pipelines/prepare_llava.py from this checkout


def tree_rss(process: psutil.Process) -> tuple[int, int]:
    """(driver RSS, RSS summed over the driver and all its descendants)."""
    try:
        own = process.memory_info().rss
        total = own
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):  # exited between listing and reading
                total += child.memory_info().rss
        return own, total
    except psutil.NoSuchProcess:
        return 0, 0


def measure(json_path: Path, image_root: Path, output: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [
        sys.executable,
        "pipelines/prepare_llava.py",
        "--set",
        f"json_path={json_path}",
        "--set",
        f"image_root={image_root}",
        "--set",
        "template=vicuna_v1",
        "--set",
        f"output={output}",
        "--set",
        "shard_mb=64",
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watched = psutil.Process(proc.pid)
    peak_driver = peak_tree = 0
    while proc.poll() is None:
        driver, tree = tree_rss(watched)
        peak_driver, peak_tree = max(peak_driver, driver), max(peak_tree, tree)
        time.sleep(0.2)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(f"prepare_llava failed:\n{out[-3000:]}")
    summary = json.loads((output / "summary.json").read_text())
    return dict(
        records=summary["read"],
        written=summary["written"],
        json_mb=json_path.stat().st_size / 2**20,
        seconds=time.perf_counter() - start,
        driver_mb=peak_driver / 2**20,
        tree_mb=peak_tree / 2**20,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs=2, default=(50_000, 200_000))
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    small, large = sorted(args.records)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="mqt-prepare-mem-"))
    corpus = work / "corpus"
    if not (corpus / INSTRUCT_JSON).exists():
        print(f"writing a {large}-record synthetic corpus to {corpus} ...")
        write_corpus(corpus, CorpusSpec(seed=0, num_pretrain=0, num_instruct=large, num_eval=0), log=lambda _: None)
    records = json.loads((corpus / INSTRUCT_JSON).read_text())
    subset = work / "small.json"
    subset.write_text(json.dumps(records[:small], indent=1))
    del records

    rows = []
    for name, path in ((f"{small}", subset), (f"{large}", corpus / INSTRUCT_JSON)):
        result = measure(path, corpus, work / f"shards-{name}")
        rows.append(result)
        print(
            f"{result['records']:>7} records, JSON {result['json_mb']:6.1f} MB: {result['seconds']:6.1f}s, "
            f"peak RSS driver {result['driver_mb']:6.0f} MB, whole tree {result['tree_mb']:6.0f} MB"
        )
    growth = rows[1]["records"] / rows[0]["records"]
    print(
        f"input x{growth:.1f} -> driver peak x{rows[1]['driver_mb'] / rows[0]['driver_mb']:.2f}, "
        f"tree peak x{rows[1]['tree_mb'] / rows[0]['tree_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
