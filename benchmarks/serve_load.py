"""Serving under load, measured on a real Ray Serve on loopback.

    python benchmarks/serve_load.py batching --seconds 15 --rounds 6  # layouts against the engine in-process
    python benchmarks/serve_load.py load --seconds 60                  # C = 8 and 32 clients per tier
    python benchmarks/serve_load.py auto                               # `auto` routing under a load step
    python benchmarks/serve_load.py stream --seconds 60                # mixed budgets, stream on and off
    python benchmarks/serve_load.py shared --seconds 20                # one shared model vs one per tier

batching: --clients (16) concurrent clients against each server layout (the shared model in the
ingress: proxy -> ingress; a tier deployment: proxy -> ingress -> tier; the same tier at
max_batch_size 1), beside the engine in this process at batch 8 on the same requests (the physical
limit), in alternating rounds: throughput as a fraction of the engine's, CPU milliseconds per
request in each process, and every answer checked against the in-process engine's.
load: every tier at C concurrent clients: throughput, p50/p99 latency, errors (goal 0).
auto: a load step (--step clients, --phase-seconds each) sent once to the `full` tier and once to
`auto`; per phase the latency against --target and the budget mix, and a plot of both over time
(runs/benchmarks/serve_auto.png).
stream: 32 clients for --seconds over three tiers, every other request streamed: errors, p50/p99
latency and time to the first token per tier and mode.
shared: the same three budgets served by a deployment per tier and by one shared model, both
deployed at once and driven in alternating rounds (mixed budgets, 8 clients): throughput and latency
(medians over rounds, with their spread) and the memory (USS) of each application's processes,
ingress included.

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
from cpu_account import DRIVER, CpuSampler
from ray import serve

from mqt_llava.config import load_config, preset_path
from mqt_llava.model.spec import ModelSpec
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
    body: int = -1  # which of the payloads was sent
    text: str | None = None  # the answer (not streamed)


def send(session: requests.Session, url: str, body: dict, sample: Sample, started: float) -> None:
    """One request; a streamed one is read to its `[DONE]`, noting when the first content arrived."""
    if not body.get("stream"):
        response = session.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        if response.status_code == 200:
            answer = response.json()
            sample.ok, sample.tier, sample.visual_tokens = True, answer["model"], answer["visual_tokens"]
            sample.text = answer["choices"][0]["message"]["content"]
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


def drive(
    url: str, model: str | list[str], phases: list[tuple[int, float]], payloads: list[dict], stream_every: int = 0
) -> list[Sample]:
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
            sample = Sample(start - t0, 0.0, False, stream=streamed, body=i % len(payloads))
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
        "requests": len(done),
        "errors": sum(not s.ok for s in samples),
        "throughput": len(done) / seconds,
        "p50": statistics.median(done) if done else float("nan"),
        "p90": quantile(done, 0.9),
        "p99": quantile(done, 0.99),
        "mix": {tier: n / len(done) for tier, n in mix.most_common()} if done else {},
    }


def report(label: str, clients: int, row: dict) -> None:
    print(
        f"{label:>10} C={clients:<3} {row['throughput']:7.2f} req/s  p50 {row['p50']:6.2f}s  "
        f"p99 {row['p99']:6.2f}s  requests {row['requests']:5d}  errors {row['errors']}",
        flush=True,
    )


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


def engine_requests(payloads: list[dict]) -> list:
    """The payloads as the server reads them: the question and the decoded image (engine Requests)."""
    from mqt_llava.data.images import decode_image
    from mqt_llava.inference import Request

    out = []
    for body in payloads:
        text, image = body["messages"][0]["content"]
        out.append(Request(text["text"], decode_image(base64.b64decode(image["image_url"]["url"].split(",", 1)[1]))))
    return out


class InProcess:
    """The engine in this process, no Serve and no HTTP: the physical limit of serving these requests.
    `rate(batch, seconds)` cycles through the requests in batches of `batch`; `answers` are each
    request's answer at batch 8 (what every server variant must answer too)."""

    def __init__(self, export: Path, payloads: list[dict], threads: int) -> None:
        import torch

        from mqt_llava.inference import InferenceEngine

        torch.set_num_threads(threads)
        self.engine = InferenceEngine.from_export(export)
        self.requests = engine_requests(payloads)
        self.max_tokens = payloads[0]["max_tokens"]
        self.answers = [
            c.text for i in range(0, len(self.requests), 8) for c in self.complete(self.requests[i : i + 8])
        ]

    def complete(self, requests: list) -> list:
        return self.engine.complete(requests, self.engine.max_visual_tokens, self.max_tokens, 0.0, [])

    def rate(self, batch: int, seconds: float) -> tuple[float, float, float]:
        """(requests/s, start, end) of `seconds` of batches of `batch` requests."""
        done, i, start = 0, 0, time.time()
        while time.time() - start < seconds:
            done += len(self.complete([self.requests[(i + j) % len(self.requests)] for j in range(batch)]))
            i += batch
        end = time.time()
        return done / (end - start), start, end


def start(export: Path, tiers: list[dict], auto: dict | None = None, access_log: bool = True) -> str:
    from mqt_llava.serve.app import run_on_loopback

    init_ray()
    args = {"model": str(export), "tiers": tiers} | ({"auto": auto} if auto else {})
    return run_on_loopback(args, "bench", {"enable_access_log": access_log})


def app_pids(app: str) -> list[int]:
    """The processes of an application's replicas, its ingress included (one replica per deployment here)."""
    handles = [serve.get_deployment_handle(name, app_name=app) for name in serve.status().applications[app].deployments]
    return sorted({h.options(method_name="identity").remote().result()["pid"] for h in handles})


def uss_gib(pids: list[int]) -> float:
    import psutil

    return sum(psutil.Process(p).memory_full_info().uss for p in pids) / 2**30


# The batching variants, all deployed at once on the 2 logical CPUs: 0.25 + 0.5 + 0.5, and 0.25 + 0.5.
BATCHED = {"replica_cpus": 0.5, "torch_threads": 2, "batch_wait_timeout_s": 0.05}
BATCHING_APPS = {
    "per-tier": {
        "tiers": [
            {"name": "batched", "visual_tokens": "M", "max_batch_size": 8} | BATCHED,
            {"name": "single", "visual_tokens": "M", "max_batch_size": 1} | BATCHED,
        ]
    },
    "in-ingress": {"tiers": [{"name": "batched", "visual_tokens": "M"}], "shared": {"max_batch_size": 8} | BATCHED},
}
BATCHING_VARIANTS = {  # variant: (application, model id); "engine" is the engine in this process
    "engine": (None, None),
    "in-ingress": ("in-ingress", "batched"),  # proxy -> ingress holding the model
    "per-tier": ("per-tier", "batched"),  # proxy -> ingress -> tier replica (three processes)
    "single": ("per-tier", "single"),  # the same tier at max_batch_size 1
}


def cpu_rows(cores: dict[str, float], rate: float) -> dict[str, float]:
    """CPU milliseconds per request by process kind (Serve's replicas by deployment), largest first."""
    named: dict[str, float] = {}
    for kind, used in cores.items():
        key = kind.split(":")[-1] if kind.startswith("ray::ServeReplica") else kind
        key = key if key in (DRIVER, "Ingress", "ray::ProxyActor") or key.startswith("tier-") else "other"
        named[key] = named.get(key, 0.0) + 1000 * used / rate
    return dict(sorted(named.items(), key=lambda kv: -kv[1]))


def batching(args, export: Path, payloads: list[dict]) -> None:
    """Every variant at --clients concurrent clients (the engine in-process at batch 8), in alternating
    rounds; each server's answers checked against the in-process engine's; CPU per request per process.
    16 clients (the default) keep a batch of 8 gathering while the one before it computes; with 8, the
    engine waits for each batch's requests to come back round the loop."""
    from mqt_llava.serve.app import build

    payloads = payloads[:32]
    local = InProcess(export, payloads, threads=2)
    # The replicas' logs (the access log included) stay in their files, as under `serve deploy`:
    # echoed to this process they would take the clients' and log_monitor's CPU from the server.
    init_ray(log_to_driver=False)
    url = start_apps(
        {name: {"model": str(export)} | app for name, app in BATCHING_APPS.items()}, build, args.access_log
    )
    for app, model in BATCHING_VARIANTS.values():
        if app is not None:
            drive(f"{url}/{app}", model, [(args.clients, args.warmup)], payloads)
    rates: dict[str, list[float]] = {name: [] for name in BATCHING_VARIANTS}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in BATCHING_VARIANTS}
    wrong: Counter[str] = Counter()
    one_at_a_time = []
    with CpuSampler(every=1.0) as sampler:
        for r in range(args.rounds):
            for name in BATCHING_VARIANTS if r % 2 == 0 else reversed(BATCHING_VARIANTS):
                app, model = BATCHING_VARIANTS[name]
                if app is None:
                    rate, t0, t1 = local.rate(8, args.seconds)
                else:
                    t0 = time.time()
                    samples = drive(f"{url}/{app}", model, [(args.clients, args.seconds)], payloads)
                    t1 = time.time()
                    rate = summarise(samples, args.seconds)["throughput"]
                    wrong[name] += sum(not s.ok or s.text != local.answers[s.body] for s in samples)
                rates[name].append(rate)
                cpu[name].append(cpu_rows(sampler.cores(t0, t1)[1], rate))
                print(f"round {r + 1}/{args.rounds} {name:>10}: {rate:6.1f} req/s", flush=True)
            one_at_a_time.append(local.rate(1, args.seconds / 4)[0])
    engine = statistics.median(rates["engine"])
    print(f"\n{'variant':>10} {'req/s':>7} {'of engine (median, range)':>27}  CPU ms per request by process (medians)")
    for name, values in rates.items():
        ratios = [v / e for v, e in zip(values, rates["engine"], strict=True)]
        kinds = {k for row in cpu[name] for k in row}
        per = {k: statistics.median(row.get(k, 0.0) for row in cpu[name]) for k in kinds}
        listed = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
        print(
            f"{name:>10} {statistics.median(values):7.1f} {statistics.median(ratios):>12.2f} "
            f"[{min(ratios):.2f}, {max(ratios):.2f}]  total {sum(per.values()):.1f}: {listed}"
        )
    gain = engine / statistics.median(one_at_a_time)
    served = statistics.median(b / s for b, s in zip(rates["per-tier"], rates["single"], strict=True))
    print(
        f"engine alone at batch 1: {statistics.median(one_at_a_time):.1f} req/s: batch 8 gains {gain:.2f}x; "
        f"dynamic batching over one at a time through Serve {served:.2f}x ({served / gain:.0%} of that gain)"
    )
    print(f"answers that differ from the in-process engine's (or failed): {dict(wrong)}")
    print("goal: a server variant >= 0.6 of the engine at batch 8")
    if sum(wrong.values()):
        raise SystemExit("a server answered differently from the same engine in-process")


def load(args, export: Path, payloads: list[dict]) -> None:
    tiers = [
        {"name": n, "visual_tokens": m, "replica_cpus": 0.5, "torch_threads": 1, "max_batch_size": 8}
        for n, m in (("fast", 4), ("balanced", 16), ("full", "M"))
    ]
    url = start(export, tiers, access_log=args.access_log)
    for tier in ("fast", "balanced", "full"):
        drive(url, tier, [(8, args.warmup)], payloads)
        for clients in (8, 32):
            report(tier, clients, summarise(drive(url, tier, [(clients, args.seconds)], payloads), args.seconds))


def auto(args, export: Path, payloads: list[dict]) -> None:
    tiers = [
        {"name": n, "visual_tokens": m, "replica_cpus": 0.5, "torch_threads": 1, "max_batch_size": 8}
        for n, m in (("fast", 16), ("balanced", 64), ("full", "M"))
    ]
    policy = {"target_latency_s": args.target, "cooldown_s": args.cooldown}
    url = start(export, tiers, policy, args.access_log)
    for tier in ("fast", "balanced", "full"):
        drive(url, tier, [(4, args.warmup)], payloads)
    phases = [(c, args.phase_seconds) for c in args.step]
    print(
        f"load step: {' -> '.join(str(c) for c in args.step)} clients, {args.phase_seconds:.0f} s each; "
        f"target {args.target} s, cooldown {args.cooldown} s"
    )
    runs = {model: drive(url, model, phases, payloads) for model in ("full", "auto")}
    print(f"{'model':>6} {'phase':>5} {'clients':>7} {'req/s':>7} {'p50':>6} {'p90':>6} {'> target':>8}  budget mix")
    for model, samples in runs.items():
        for p, (clients, seconds) in enumerate(phases):
            lo, hi = p * seconds, (p + 1) * seconds
            row = summarise([s for s in samples if lo <= s.start < hi], seconds)
            over = [s.latency > args.target for s in samples if lo <= s.start < hi and s.ok]
            mix = ", ".join(f"{t} {share:.0%}" for t, share in row["mix"].items())
            print(
                f"{model:>6} {p + 1:>5} {clients:>7} {row['throughput']:7.1f} {row['p50']:5.2f}s {row['p90']:5.2f}s "
                f"{sum(over) / max(len(over), 1):8.0%}  {mix}  (errors {row['errors']})"
            )
    from mqt_llava.model.export import max_visual_tokens

    budgets = {"fast": 16, "balanced": 64, "full": max_visual_tokens(export)}
    path = plot_auto(runs, phases, args.target, budgets)
    print(f"plot: {path}")


MIXED = (("fast", 4), ("balanced", 16), ("full", "M"))


def stream(args, export: Path, payloads: list[dict]) -> None:
    tiers = [
        {"name": n, "visual_tokens": m, "replica_cpus": 0.5, "torch_threads": 1, "max_batch_size": 8} for n, m in MIXED
    ]
    url = start(export, tiers, access_log=args.access_log)
    names = [n for n, _ in MIXED]
    drive(url, names, [(8, args.warmup)], payloads, stream_every=2)
    samples = drive(url, names, [(32, args.seconds)], payloads, stream_every=2)
    print(
        f"32 clients, {args.seconds:.0f} s, tiers cycled per request, every other request streamed "
        f"(max_tokens {payloads[0]['max_tokens']}):"
    )
    print(f"{'tier':>9} {'stream':>6} {'answers':>7} {'p50':>6} {'p99':>6} {'ttft p50':>8} {'ttft p99':>8}")
    for tier in names:
        for streamed in (False, True):
            ok = [s for s in samples if s.ok and s.stream == streamed and s.tier == tier]
            lat, ttft = sorted(s.latency for s in ok), sorted(s.first_token for s in ok)
            print(
                f"{tier:>9} {str(streamed).lower():>6} {len(ok):>7} {quantile(lat, 0.5):5.2f}s "
                f"{quantile(lat, 0.99):5.2f}s {quantile(ttft, 0.5):7.2f}s {quantile(ttft, 0.99):7.2f}s"
            )
    errors = {mode: sum(not s.ok for s in samples if s.stream == mode) for mode in (False, True)}
    rate = sum(s.ok for s in samples) / args.seconds
    print(
        f"errors (goal 0): {errors[False]} not streamed, {errors[True]} streamed, of {len(samples)} requests; "
        f"{rate:.1f} answers/s"
    )


def shared(args, export: Path, payloads: list[dict]) -> None:
    from mqt_llava.serve.app import build

    # Both applications are up at once on 2 logical CPUs: 3 x 0.25 + 0.25 (ingress), and the ingress
    # holding the shared model, 0.25 + 0.5.
    replica = {"replica_cpus": 0.25, "torch_threads": 1, "max_batch_size": 8}
    tiers = [{"name": n, "visual_tokens": m} | replica for n, m in MIXED]
    one = replica | {"replica_cpus": 0.5, "torch_threads": 2}  # the cores the three tiers' threads would share
    apps = {
        "per-tier": {"model": str(export), "tiers": tiers},
        "shared": {"model": str(export), "tiers": tiers, "shared": one},
    }
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
            print(
                f"round {r + 1}: {app:>8} {row['throughput']:6.1f} req/s  p50 {row['p50']:.3f} s  "
                f"errors {row['errors']}",
                flush=True,
            )
    pids = {app: app_pids(app) for app in apps}
    memory = {app: uss_gib(pids[app]) for app in apps}
    print(f"\n{'deployment':>10} {'processes':>9} {'USS':>9} {'req/s (median, range)':>24} {'p50':>7} {'p99':>7}")
    for app in apps:
        rates = [row["throughput"] for row in rows[app]]
        print(
            f"{app:>10} {len(pids[app]):>9} {memory[app]:7.2f} GiB {statistics.median(rates):8.1f} "
            f"[{min(rates):.1f}, {max(rates):.1f}] {statistics.median(r['p50'] for r in rows[app]):6.3f}s "
            f"{statistics.median(r['p99'] for r in rows[app]):6.3f}s"
        )
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
        medians = [
            (b + width / 2, statistics.median(x))
            for b in bins
            if (x := [s.latency for s in ok if b <= s.start < b + width])
        ]
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
    bottom.stackplot(
        [b + width / 2 for b in bins],
        *shares.values(),
        labels=[f"{tier} (m={m})" for tier, m in budgets.items()],
        alpha=0.8,
    )
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
    parser.add_argument("--seconds", type=float, default=20, help="seconds per measurement (a round's, with rounds)")
    parser.add_argument("--model", type=Path, help=f"an export to serve (default {EXPORT})")
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--clients", type=int, default=16, help="batching: concurrent clients")
    parser.add_argument("--rounds", type=int, default=4, help="batching, shared: alternating rounds per variant")
    parser.add_argument(
        "--random-init",
        nargs="*",
        metavar="OVERRIDE",
        help="serve a random-weight tiny-preset variant with these overrides (auto's default: "
        f"{' '.join(AUTO_MODEL)}); no value: the quickstart's export",
    )
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
