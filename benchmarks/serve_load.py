"""Serving under load, measured on a real Ray Serve on loopback with the quickstart's export.

    python benchmarks/serve_load.py batching              # dynamic batching vs one request at a time
    python benchmarks/serve_load.py load --seconds 60     # C = 8 and 32 clients per tier

batching: the same tier deployed twice, `max_batch_size` 8 and 1, each driven by 8 concurrent
clients for --seconds; throughput ratio (goal >= 3x). load: every tier of serve_apps/config.yaml at
C concurrent clients: throughput, p50/p99 latency, errors (goal 0). Clients are threads in
this process (threads with requests), each sending one short VQA request with a data-URL image after another.
"""

from __future__ import annotations

import argparse
import base64
import io
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import requests
from ray import serve

from mqt_llava.config import REPO_ROOT
from mqt_llava.data.synthetic import SHORT_ANSWER, ask, random_scene, record_rng, render_scene
from mqt_llava.ray_runtime import init_ray

EXPORT = Path("runs/quickstart/train/tiny-stage2/export")


def bodies(n: int) -> list[dict]:
    out = []
    for i in range(n):
        rng = record_rng(11, "serve-load", i)
        scene = random_scene(rng)
        buffer = io.BytesIO()
        render_scene(scene).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        question = f"{ask(scene, 'count', rng).question}\n{SHORT_ANSWER}"
        content = [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": url}}]
        out.append({"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 8})
    return out


def drive(url: str, model: str, clients: int, seconds: float, payloads: list[dict]) -> dict:
    """`clients` threads, each sending one request after another until the deadline."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        session = requests.Session()
        i = k
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                body = payloads[i % len(payloads)] | {"model": model}
                response = session.post(f"{url}/v1/chat/completions", json=body, timeout=120)
                ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            with lock:
                if ok:
                    latencies.append(time.monotonic() - start)
                else:
                    errors[0] += 1
            i += clients

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "model": model, "clients": clients, "requests": len(latencies), "errors": errors[0],
        "throughput": len(latencies) / elapsed,
        "p50": statistics.median(ordered) if ordered else float("nan"),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan"),
    }  # fmt: skip


def start(tiers: list[dict]) -> str:
    sys.path.insert(0, str(REPO_ROOT))  # serve_apps, here and (below) in the replicas
    from serve_apps.mqt_app import build

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init_ray(runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build({"model": str(EXPORT.resolve()), "tiers": tiers}), name="bench", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def report(row: dict) -> None:
    print(f"{row['model']:>10} C={row['clients']:<3} {row['throughput']:7.2f} req/s  p50 {row['p50']:6.2f}s  "
          f"p99 {row['p99']:6.2f}s  requests {row['requests']:5d}  errors {row['errors']}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["batching", "load"])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    args = parser.parse_args()
    if not EXPORT.exists():
        raise SystemExit(f"{EXPORT} not found: run python jobs/quickstart.py first")
    payloads = bodies(64)
    if args.which == "batching":
        common = {"visual_tokens": "M", "replica_cpus": 0.5, "torch_threads": 2, "batch_wait_timeout_s": 0.05}
        url = start(
            [{"name": "batched", "max_batch_size": 8} | common, {"name": "single", "max_batch_size": 1} | common]
        )
        rows = {}
        for model in ("batched", "single"):
            (drive(url, model, 8, args.warmup, payloads))
            rows[model] = drive(url, model, 8, args.seconds, payloads)
            report(rows[model])
        ratio = rows["batched"]["throughput"] / rows["single"]["throughput"]
        print(f"dynamic batching / one at a time, 8 clients: {ratio:.2f}x (goal >= 3x)")
    else:
        tiers = [{"name": n, "visual_tokens": m, "replica_cpus": 0.5, "torch_threads": 1, "max_batch_size": 8}
                 for n, m in (("fast", 4), ("balanced", 16), ("full", "M"))]  # fmt: skip
        url = start(tiers)
        for tier in ("fast", "balanced", "full"):
            (drive(url, tier, 8, args.warmup, payloads))
            for clients in (8, 32):
                report(drive(url, tier, clients, args.seconds, payloads))
    serve.shutdown()


if __name__ == "__main__":
    main()
