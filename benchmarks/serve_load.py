"""Serving under load, measured on a real Ray Serve on loopback.

    python benchmarks/serve_load.py batching --seconds 30   # dynamic batching vs one request at a time
    python benchmarks/serve_load.py load --seconds 60       # C = 8 and 32 clients per tier
    python benchmarks/serve_load.py auto                    # `auto` routing under a load step
    python benchmarks/serve_load.py stream --seconds 60     # 32 clients, mixed budgets, stream on and off
    python benchmarks/serve_load.py shared --seconds 20     # one shared deployment vs a deployment per tier

batching: the same tier deployed twice, `max_batch_size` 8 and 1, each driven by 8 concurrent
clients; the throughput ratio (goal >= 3x) is printed beside the engine's own ratio for batch 8 over
batch 1 on the same requests (measured in this process before Serve starts: the most batching can
give on this machine). load: every tier at C concurrent clients: throughput, p50/p99 latency, errors
(goal 0). auto: a load step (--step clients, --phase-seconds each) sent once to the `full` tier and
once to `auto`; per phase the latency against --target and the budget mix, and a plot of both over
time (runs/benchmarks/serve_auto.png). stream: 32 clients for --seconds over three tiers, every other
request streamed: errors, p50/p99 latency and time to the first token per tier and mode. shared: the
same three budgets served by a deployment per tier and by one shared deployment, both deployed at once
and driven in alternating rounds (mixed budgets, 8 clients): throughput and latency (medians over
rounds, with their spread) and the replicas' memory (USS).

The model is the quickstart's export, or with --random-init a random-weight variant of the tiny
preset (its trained tokenizer kept) with the given overrides: serving speed does not depend on the
weights, and the auto mode needs budgets whose costs differ (the quickstart's M = 32 barely does).
Clients are threads in this process (requests sessions), each sending one VQA request with a
data-URL image after another; on this 2-core machine they share the cores with Serve.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests
from ray import serve

from mqt_llava.config import ModelSpec, load_config, preset_path
from mqt_llava.ray_runtime import init_ray
from mqt_llava.toy.world import SHORT_ANSWER, ask, random_scene, record_rng, render_scene

REPO = Path(__file__).resolve().parents[1]
EXPORT = REPO / "runs/quickstart/train/tiny-stage2/export"  # what `python jobs/quickstart.py` writes from the repo root
OUTPUT = REPO / "runs/benchmarks"
AUTO_MODEL = ["connector.num_queries=256", "vision_tower.architecture.image_size=128"]  # M = 256 over a 16 x 16 grid


@dataclass
class Sample:
    start: float  # seconds since the run began
    latency: float
    ok: bool
    tier: str | None = None
    visual_tokens: int | None = None
    stream: bool = False
    first_token: float | None = None  # streamed: to the first content; otherwise the latency


def send(session: requests.Session, url: str, body: dict, sample: Sample, started: float) -> None:
    """One request; a streamed one is read to its `[DONE]`, noting when the first content arrived."""
    if not body.get("stream"):
        response = session.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        if response.status_code == 200:
            answer = response.json()
            sample.ok, sample.tier, sample.visual_tokens = True, answer["model"], answer["visual_tokens"]
            sample.first_token = time.monotonic() - started
        return
    with session.post(f"{url}/v1/chat/completions", json=body, timeout=120, stream=True) as response:
        if response.status_code != 200:
            return
        for line in response.iter_lines():
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                sample.ok = sample.tier is not None
                return
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return
            choice = chunk["choices"][0] if chunk["choices"] else {}
            if sample.first_token is None and choice.get("delta", {}).get("content"):
                sample.first_token = time.monotonic() - started
            if choice.get("finish_reason"):
                sample.tier, sample.visual_tokens = chunk["model"], chunk["visual_tokens"]
                sample.first_token = sample.first_token or time.monotonic() - started  # an empty answer


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


def drive(url: str, model: str | list[str], phases: list[tuple[int, float]], payloads: list[dict],
          stream_every: int = 0) -> list[Sample]:  # fmt: skip
    """Closed-loop clients: during each (clients, seconds) phase, that many threads each send one
    request after another (the threads beyond a phase's count wait for a later phase). A list of
    models is cycled through request by request; with stream_every = k, every k-th request streams."""
    models = [model] if isinstance(model, str) else model
    bounds, elapsed = [], 0.0
    for clients, seconds in phases:
        elapsed += seconds
        bounds.append((elapsed, clients))
    samples: list[Sample] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def active(k: int, now: float) -> bool | None:
        """Whether client k sends now; None once the schedule is over."""
        for end, clients in bounds:
            if now < end:
                return k < clients
        return None

    def client(k: int) -> None:
        session = requests.Session()
        i = k
        while (on := active(k, time.monotonic() - t0)) is not None:
            if not on:
                time.sleep(0.05)
                continue
            start = time.monotonic()
            streamed = stream_every > 0 and i % stream_every == 0
            sample = Sample(start - t0, 0.0, False, stream=streamed)
            try:
                body = payloads[i % len(payloads)] | {"model": models[i % len(models)], "stream": streamed}
                send(session, url, body, sample, start)
            except (requests.RequestException, ValueError):
                pass
            sample.latency = time.monotonic() - start
            with lock:
                samples.append(sample)
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(max(c for c, _ in phases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(samples, key=lambda s: s.start)


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summarise(samples: list[Sample], seconds: float) -> dict:
    done = sorted(s.latency for s in samples if s.ok)
    mix = Counter(s.tier for s in samples if s.ok)
    return {
        "requests": len(done), "errors": sum(not s.ok for s in samples), "throughput": len(done) / seconds,
        "p50": statistics.median(done) if done else float("nan"), "p90": quantile(done, 0.9),
        "p99": quantile(done, 0.99), "mix": {tier: n / len(done) for tier, n in mix.most_common()} if done else {},
    }  # fmt: skip


def report(label: str, clients: int, row: dict) -> None:
    print(f"{label:>10} C={clients:<3} {row['throughput']:7.2f} req/s  p50 {row['p50']:6.2f}s  "
          f"p99 {row['p99']:6.2f}s  requests {row['requests']:5d}  errors {row['errors']}", flush=True)  # fmt: skip


def model_export(model: Path | None, overrides: list[str] | None) -> Path:
    """The export asked for (the quickstart's by default), or a random-weight variant of the tiny
    preset written once per overrides (its tokenizer is the quickstart's trained one)."""
    if model is not None and not overrides:
        if not (model / "config.json").exists():
            raise SystemExit(f"{model} is not an export (no config.json)")
        return model.resolve()
    if not EXPORT.exists():
        raise SystemExit(f"{EXPORT} not found: run python jobs/quickstart.py first, or pass --model")
    if not overrides:
        return EXPORT
    import torch

    from mqt_llava.model.builder import build_model
    from mqt_llava.model.export import save_export

    path = OUTPUT / "serve-models" / hashlib.sha1(json.dumps(overrides).encode()).hexdigest()[:12]
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        random_parts = ["vision_tower.pretrained=null", "llm.pretrained=null"]
        save_export(build_model(load_config(ModelSpec, preset_path("tiny"), random_parts + overrides)), path)
    return path.resolve()


def engine_ceiling(export: Path, payloads: list[dict], threads: int, seconds: float) -> dict[int, float]:
    """Requests/s of the engine itself at batch 1 and 8 on the benchmark's requests (no Serve, no HTTP)."""
    import torch

    from mqt_llava.data.images import decode_image
    from mqt_llava.inference import InferenceEngine, Request

    torch.set_num_threads(threads)
    engine = InferenceEngine.from_export(export)
    reqs = []
    for body in payloads[:8]:
        text, image = body["messages"][0]["content"]
        reqs.append(Request(text["text"], decode_image(base64.b64decode(image["image_url"]["url"].split(",", 1)[1]))))
    rates = {}
    for batch in (1, 8):
        engine.complete(reqs[:batch], engine.max_visual_tokens, 8, 0.0, [])
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            done += len(engine.complete(reqs[:batch], engine.max_visual_tokens, 8, 0.0, []))
        rates[batch] = done / (time.perf_counter() - start)
    return rates


def start(export: Path, tiers: list[dict], auto: dict | None = None, access_log: bool = True) -> str:
    from mqt_llava.serve.app import run_on_loopback

    init_ray()
    args = {"model": str(export), "tiers": tiers} | ({"auto": auto} if auto else {})
    return run_on_loopback(args, "bench", {"enable_access_log": access_log})


def replica_pids(app: str) -> list[int]:
    """The processes of an application's tier replicas (one replica per deployment here)."""
    pids = set()
    for name in serve.status().applications[app].deployments:
        if name != "Ingress":
            identity = serve.get_deployment_handle(name, app_name=app).options(method_name="identity").remote()
            pids.add(int(identity.result()["engine"].split(":")[0]))
    return sorted(pids)


def uss_gib(pids: list[int]) -> float:
    import psutil

    return sum(psutil.Process(p).memory_full_info().uss for p in pids) / 2**30


def batching(args, export: Path, payloads: list[dict]) -> None:
    ceiling = engine_ceiling(export, payloads, threads=2, seconds=args.seconds / 3)
    common = {"visual_tokens": "M", "replica_cpus": 0.5, "torch_threads": 2, "batch_wait_timeout_s": 0.05}
    tiers = [{"name": "batched", "max_batch_size": 8} | common, {"name": "single", "max_batch_size": 1} | common]
    url = start(export, tiers, access_log=args.access_log)
    rows = {}
    for model in ("batched", "single"):
        drive(url, model, [(8, args.warmup)], payloads)
        rows[model] = summarise(drive(url, model, [(8, args.seconds)], payloads), args.seconds)
        report(model, 8, rows[model])
    ratio = rows["batched"]["throughput"] / rows["single"]["throughput"]
    engine = ceiling[8] / ceiling[1]
    print(f"engine alone, same requests: batch 8 {ceiling[8]:.1f} req/s, batch 1 {ceiling[1]:.1f} req/s: {engine:.2f}x")
    print(f"dynamic batching / one at a time, 8 clients: {ratio:.2f}x (goal >= 3x); "
          f"{ratio / engine:.0%} of the engine's own batch-8 gain")  # fmt: skip


def load(args, export: Path, payloads: list[dict]) -> None:
    tiers = [{"name": n, "visual_tokens": m, "replica_cpus": 0.5, "torch_threads": 1, "max_batch_size": 8}
             for n, m in (("fast", 4), ("balanced", 16), ("full", "M"))]  # fmt: skip
    url = start(export, tiers, access_log=args.access_log)
    for tier in ("fast", "balanced", "full"):
        drive(url, tier, [(8, args.warmup)], payloads)
        for clients in (8, 32):
            report(tier, clients, summarise(drive(url, tier, [(clients, args.seconds)], payloads), args.seconds))


def auto(args, export: Path, payloads: list[dict]) -> None:
    tiers = [{"name": n, "visual_tokens": m, "replica_cpus": 0.5, "torch_threads": 1, "max_batch_size": 8}
             for n, m in (("fast", 16), ("balanced", 64), ("full", "M"))]  # fmt: skip
    policy = {"target_latency_s": args.target, "cooldown_s": args.cooldown}
    url = start(export, tiers, policy, args.access_log)
    for tier in ("fast", "balanced", "full"):
        drive(url, tier, [(4, args.warmup)], payloads)
    phases = [(c, args.phase_seconds) for c in args.step]
    print(f"load step: {' -> '.join(str(c) for c in args.step)} clients, {args.phase_seconds:.0f} s each; "
          f"target {args.target} s, cooldown {args.cooldown} s")  # fmt: skip
    runs = {model: drive(url, model, phases, payloads) for model in ("full", "auto")}
    print(f"{'model':>6} {'phase':>5} {'clients':>7} {'req/s':>7} {'p50':>6} {'p90':>6} {'> target':>8}  budget mix")
    for model, samples in runs.items():
        for p, (clients, seconds) in enumerate(phases):
            lo, hi = p * seconds, (p + 1) * seconds
            row = summarise([s for s in samples if lo <= s.start < hi], seconds)
            over = [s.latency > args.target for s in samples if lo <= s.start < hi and s.ok]
            mix = ", ".join(f"{t} {share:.0%}" for t, share in row["mix"].items())
            print(f"{model:>6} {p + 1:>5} {clients:>7} {row['throughput']:7.1f} {row['p50']:5.2f}s {row['p90']:5.2f}s "
                  f"{sum(over) / max(len(over), 1):8.0%}  {mix}  (errors {row['errors']})")  # fmt: skip
    from mqt_llava.model.export import max_visual_tokens

    budgets = {"fast": 16, "balanced": 64, "full": max_visual_tokens(export)}
    path = plot_auto(runs, phases, args.target, budgets)
    print(f"plot: {path}")


MIXED = (("fast", 4), ("balanced", 16), ("full", "M"))


def stream(args, export: Path, payloads: list[dict]) -> None:
    tiers = [{"name": n, "visual_tokens": m, "replica_cpus": 0.5, "torch_threads": 1, "max_batch_size": 8}
             for n, m in MIXED]  # fmt: skip
    url = start(export, tiers, access_log=args.access_log)
    names = [n for n, _ in MIXED]
    drive(url, names, [(8, args.warmup)], payloads, stream_every=2)
    samples = drive(url, names, [(32, args.seconds)], payloads, stream_every=2)
    print(f"32 clients, {args.seconds:.0f} s, tiers cycled per request, every other request streamed "
          f"(max_tokens {payloads[0]['max_tokens']}):")  # fmt: skip
    print(f"{'tier':>9} {'stream':>6} {'answers':>7} {'p50':>6} {'p99':>6} {'ttft p50':>8} {'ttft p99':>8}")
    for tier in names:
        for streamed in (False, True):
            ok = [s for s in samples if s.ok and s.stream == streamed and s.tier == tier]
            lat, ttft = sorted(s.latency for s in ok), sorted(s.first_token for s in ok)
            print(f"{tier:>9} {str(streamed).lower():>6} {len(ok):>7} {quantile(lat, 0.5):5.2f}s "
                  f"{quantile(lat, 0.99):5.2f}s {quantile(ttft, 0.5):7.2f}s {quantile(ttft, 0.99):7.2f}s")  # fmt: skip
    errors = {mode: sum(not s.ok for s in samples if s.stream == mode) for mode in (False, True)}
    rate = sum(s.ok for s in samples) / args.seconds
    print(f"errors (goal 0): {errors[False]} not streamed, {errors[True]} streamed, of {len(samples)} requests; "
          f"{rate:.1f} answers/s")  # fmt: skip


def shared(args, export: Path, payloads: list[dict]) -> None:
    from mqt_llava.serve.app import build

    # Both applications are up at once on 2 logical CPUs: 3 x 0.25 + 0.25 (ingress), and 0.5 + 0.25.
    replica = {"replica_cpus": 0.25, "torch_threads": 1, "max_batch_size": 8}
    tiers = [{"name": n, "visual_tokens": m} | replica for n, m in MIXED]
    one = replica | {"replica_cpus": 0.5, "torch_threads": 2}  # the cores the three tiers' threads would share
    apps = {"per-tier": {"model": str(export), "tiers": tiers}, "shared": {"model": str(export), "tiers": tiers,
                                                                           "shared": one}}  # fmt: skip
    init_ray()
    url = start_apps(apps, build, args.access_log)
    names = [n for n, _ in MIXED]
    for app in apps:
        drive(f"{url}/{app}", names, [(8, args.warmup)], payloads)
    rows: dict[str, list[dict]] = {app: [] for app in apps}
    for r in range(args.rounds):
        for app in apps if r % 2 == 0 else reversed(apps):
            rows[app].append(summarise(drive(f"{url}/{app}", names, [(8, args.seconds)], payloads), args.seconds))
            row = rows[app][-1]
            print(f"round {r + 1}: {app:>8} {row['throughput']:6.1f} req/s  p50 {row['p50']:.3f} s  "
                  f"errors {row['errors']}", flush=True)  # fmt: skip
    memory = {app: uss_gib(replica_pids(app)) for app in apps}
    print(f"\n{'deployment':>10} {'replicas':>8} {'USS':>9} {'req/s (median, range)':>24} {'p50':>7} {'p99':>7}")
    for app in apps:
        rates = [row["throughput"] for row in rows[app]]
        print(f"{app:>10} {len(replica_pids(app)):>8} {memory[app]:7.2f} GiB {statistics.median(rates):8.1f} "
              f"[{min(rates):.1f}, {max(rates):.1f}] {statistics.median(r['p50'] for r in rows[app]):6.3f}s "
              f"{statistics.median(r['p99'] for r in rows[app]):6.3f}s")  # fmt: skip
    ratio = statistics.median(r["throughput"] for r in rows["shared"]) / statistics.median(
        r["throughput"] for r in rows["per-tier"]
    )
    print(f"shared / per-tier: memory {memory['shared'] / memory['per-tier']:.2f}x, throughput {ratio:.2f}x")


def start_apps(apps: dict[str, dict], build, access_log: bool) -> str:
    """Several applications on one loopback Serve, each at /<name>."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logging = {"enable_access_log": access_log}
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=logging)
    for name, app_args in apps.items():
        serve.run(build(app_args), name=name, route_prefix=f"/{name}", logging_config=logging)
    return f"http://127.0.0.1:{port}"


def plot_auto(runs: dict[str, list[Sample]], phases, target: float, budgets: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=(3, 2))
    end = sum(s for _, s in phases)
    edges, t = [], 0.0
    for clients, seconds in phases:
        edges.append((t, t + seconds, clients))
        t += seconds
    for lo, hi, clients in edges:
        for ax in (top, bottom):
            ax.axvspan(lo, hi, color="grey", alpha=0.04 * clients / max(c for c, _ in phases) * 3, lw=0)
        top.text((lo + hi) / 2, 0.98, f"{clients} clients", transform=top.get_xaxis_transform(), ha="center", va="top")
    width = 2.0
    bins = [i * width for i in range(int(end / width))]
    for (model, samples), colour in zip(runs.items(), ("tab:red", "tab:blue"), strict=True):
        ok = [s for s in samples if s.ok]
        top.scatter([s.start for s in ok], [s.latency for s in ok], s=3, alpha=0.25, color=colour)
        medians = [(b + width / 2, statistics.median(x)) for b in bins
                   if (x := [s.latency for s in ok if b <= s.start < b + width])]  # fmt: skip
        top.plot(*zip(*medians, strict=True), color=colour, label=f"model={model} (median per {width:.0f} s)")
    top.axhline(target, color="black", ls="--", lw=1, label=f"target {target} s")
    top.set_ylabel("latency (s)")
    top.set_yscale("log")
    top.legend(loc="center left")
    top.set_title("auto routing under a load step")
    ok = [s for s in runs["auto"] if s.ok]
    shares = {tier: [] for tier in budgets}
    for b in bins:
        window = [s.tier for s in ok if b <= s.start < b + width]
        for tier in budgets:
            shares[tier].append(window.count(tier) / len(window) if window else 0.0)
    bottom.stackplot([b + width / 2 for b in bins], *shares.values(),
                     labels=[f"{tier} (m={m})" for tier, m in budgets.items()], alpha=0.8)  # fmt: skip
    bottom.set_ylabel("auto: share of requests")
    bottom.set_xlabel("seconds")
    bottom.set_xlim(0, end)
    bottom.legend(loc="upper left")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / "serve_auto.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["batching", "load", "auto", "stream", "shared"])
    parser.add_argument("--seconds", type=float, default=30, help="batching and load: seconds per measurement")
    parser.add_argument("--model", type=Path, help=f"an export to serve (default {EXPORT})")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=4, help="shared: alternating rounds per deployment")
    parser.add_argument("--random-init", nargs="*", metavar="OVERRIDE",
                        help="serve a random-weight tiny-preset variant with these overrides (auto's default: "
                             f"{' '.join(AUTO_MODEL)}); no value: the quickstart's export")  # fmt: skip
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="turn off Serve's per-request access log lines (on by default, as deployed)",
    )
    parser.add_argument("--step", type=int, nargs="+", default=[2, 24, 2], help="auto: clients in each phase")
    parser.add_argument("--phase-seconds", type=float, default=30)
    parser.add_argument("--target", type=float, default=0.6, help="auto: the latency target (s)")
    parser.add_argument("--cooldown", type=float, default=3.0, help="auto: seconds between level steps")
    args = parser.parse_args()
    overrides = args.random_init if args.random_init is not None else (AUTO_MODEL if args.which == "auto" else None)
    export = model_export(args.model, overrides)
    print(f"model: {export}" + (f" (random weights; {' '.join(overrides)})" if overrides else ""))
    payloads = bodies(64)
    {"batching": batching, "load": load, "auto": auto, "stream": stream, "shared": shared}[args.which](
        args, export, payloads
    )
    serve.shutdown()


if __name__ == "__main__":
    main()
