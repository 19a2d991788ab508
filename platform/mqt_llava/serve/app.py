"""The MQT-LLaVA Ray Serve application: one deployment per budget tier, behind an OpenAI-compatible
FastAPI ingress; or (`shared`) one set of weights for every tier, held by the ingress replicas
themselves unless `shared.in_ingress` is off.

    serve run serve_apps/config.yaml                 # development, on this machine
    serve deploy serve_apps/config.yaml              # a running cluster (RAY_ADDRESS / --address)

`build(args)` is the application builder `config.yaml` names (`mqt_llava.serve.app:build`); `args`
is a `ServeSpec`. The tiers talk to the model only through the `Engine` interface
(mqt_llava.inference), so a second backend is chosen by the spec's `engine`, with this file unchanged.
"""

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from mqt_llava.devices import Placement
from mqt_llava.inference import Completion, complete_grouped, load_placed_engine
from mqt_llava.model.budgets import check_budget
from mqt_llava.model.export import visual_token_range
from mqt_llava.serve.api import (
    ApiError,
    ChunkWriter,
    Job,
    api_key_from_env,
    build_job,
    check_access,
    check_content_type,
    completion_body,
    context_error,
    parse_body,
    read_body,
)
from mqt_llava.serve.auto import AutoRouter
from mqt_llava.serve.metrics import ServeMetrics
from mqt_llava.serve.routing import Router
from mqt_llava.serve.settings import ReplicaSpec, ServeSpec

app = FastAPI(title="MQT-LLaVA", docs_url=None, redoc_url=None)


@app.exception_handler(ApiError)
async def api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def answer_fields(completion: Completion, visual_tokens: int) -> dict:
    return {
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "visual_tokens": visual_tokens,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
    }


def raise_if_error(result: dict) -> dict:
    """A replica's answer, or the ApiError it handed back for this request."""
    if "error" in result:
        raise ApiError(**result["error"])
    return result


def user_config(replica: ReplicaSpec, budget: int) -> dict:
    """What TierModel.reconfigure applies: the budget and how requests are batched."""
    return {
        "visual_tokens": budget,
        "max_batch_size": replica.max_batch_size,
        "batch_wait_timeout_s": replica.batch_wait_timeout_s,
    }


class TierModel:
    """The model answering one budget tier, or (`shared`) every tier: each job carries its budget then.
    The `Tier` deployment's replicas are one each; an ingress holding the model has one too.
    `reconfigure` ({visual_tokens, max_batch_size, batch_wait_timeout_s}, a deployment's user_config)
    applies without reloading the model."""

    def __init__(self, model: str, engine: str = "hf", torch_threads: int | None = None, use_gpu: bool = False) -> None:
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.engine = load_placed_engine(model, Placement(use_gpu), engine)
        self.visual_tokens = self.engine.max_visual_tokens

    def reconfigure(self, config: dict) -> None:
        engine = self.engine
        self.visual_tokens = check_budget(
            int(config["visual_tokens"]), engine.max_visual_tokens, minimum=engine.min_visual_tokens
        )
        self.generate.set_max_batch_size(int(config.get("max_batch_size", 8)))
        self.generate.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.02)))

    def admit(self, job: Job) -> tuple:
        """(engine request, budget, sampling), or the request's context-length ApiError."""
        m = job.visual_tokens or self.visual_tokens
        request = job.request()
        error = context_error(self.engine.prompt_tokens(request, m), job.max_tokens, self.engine.max_context)
        return error or (request, m, job.sampling())

    def answer(self, jobs: list[Job]) -> list[dict]:
        """Answers for a batch: a request over the context is refused alone, and if the engine fails on
        the batch each request is retried alone, so one bad request never fails its batch mates."""
        admitted = [self.admit(j) for j in jobs]
        work = [a for a in admitted if not isinstance(a, ApiError)]
        try:
            completions = iter(complete_grouped(self.engine, work))
        except Exception:
            completions = iter([self.alone(w) for w in work])
        results = []
        for a in admitted:
            if isinstance(a, ApiError):
                results.append({"error": a.fields()})
            elif isinstance(c := next(completions), ApiError):
                results.append({"error": c.fields()})
            else:
                results.append(answer_fields(c, a[1]))
        return results

    def alone(self, work: tuple) -> Completion | ApiError:
        try:
            return complete_grouped(self.engine, [work])[0]
        except Exception as exc:
            return ApiError(
                500, f"the engine failed on this request: {type(exc).__name__}: {exc}", type_="server_error"
            )

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def generate(self, jobs: list[Job]) -> list[dict]:
        """The requests Serve gathered into one batch, answered by the engine (one call per group that
        can share a batch); a worker thread keeps the replica's loop responsive meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(None, self.answer, jobs)

    async def __call__(self, job: Job) -> dict:
        return await self.generate(job)

    async def stream(self, job: Job) -> AsyncIterator[dict]:
        """One request generated alone: {"delta": text} items, then its answer's fields; or one
        {"error": ...}. When the caller goes away (Serve cancels this generator), generation stops."""
        admitted = self.admit(job)
        if isinstance(admitted, ApiError):
            yield {"error": admitted.fields()}
            return
        request, m, sampling = admitted
        cancel = threading.Event()
        items = self.engine.stream(request, m, sampling, cancel)
        loop = asyncio.get_running_loop()
        try:
            while (item := await loop.run_in_executor(None, next, items, None)) is not None:
                yield {"delta": item} if isinstance(item, str) else answer_fields(item, m)
        finally:
            cancel.set()

    def identity(self) -> dict:
        """Which loaded model this replica holds, and its budget (tests check a reconfigure keeps the model)."""
        return {"pid": os.getpid(), "engine": f"{os.getpid()}:{id(self.engine)}", "budget": self.visual_tokens}


Tier = serve.deployment(TierModel, name="Tier")


class TierHandle:
    """A tier answered by its own deployment: the ingress's calls go through its handle."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def answer(self, job: Job) -> dict:
        return await self.handle.remote(job)

    def stream(self, job: Job):
        """The tier's stream items; `cancel()` stops the replica generating."""
        return self.handle.options(stream=True, method_name="stream").remote(job)


class LocalTier:
    """A tier answered by the model in this replica (`shared.in_ingress`): no hop, no pickled image."""

    def __init__(self, model: TierModel) -> None:
        self.model = model

    async def answer(self, job: Job) -> dict:
        return await self.model(job)

    def stream(self, job: Job):
        return LocalStream(self.model.stream(job))


class LocalStream:
    """TierModel.stream's items, with the `cancel()` of a deployment's stream: closing the generator
    sets its cancel event, so generation stops."""

    def __init__(self, items: AsyncIterator[dict]) -> None:
        self.items = items

    def __anext__(self):
        return self.items.__anext__()

    def cancel(self) -> None:
        asyncio.ensure_future(self.items.aclose())


@serve.deployment
@serve.ingress(app)
class Ingress:
    """The OpenAI-compatible HTTP front: checks and parses each request, routes it to its tier, and
    answers it from the tier's deployment (`tiers`), or, with `tiers` None, from the shared model
    this replica holds (`shared.in_ingress`)."""

    def __init__(
        self,
        spec: dict,
        token_range: tuple[int, int],
        budgets: dict[str, int],
        tiers: dict[str, DeploymentHandle] | None,
        use_gpu: bool = False,
    ) -> None:
        self.spec = ServeSpec(**spec)
        self.minimum, self.maximum = token_range
        self.router = Router(budgets)
        self.auto = AutoRouter(budgets, self.spec.auto) if self.spec.auto.enabled else None
        self.model = None
        if tiers is None:
            shared = self.spec.shared
            self.model = TierModel(self.spec.model, self.spec.engine, shared.torch_threads, use_gpu)
            self.model.reconfigure(user_config(shared, self.maximum))
            self.tiers = {name: LocalTier(self.model) for name in budgets}
        else:
            self.tiers = {name: TierHandle(handle) for name, handle in tiers.items()}
        self.shared = self.spec.shared is not None  # one model answers every tier: the job names its tier's budget
        self.api_key = api_key_from_env(self.spec)
        self.metrics = ServeMetrics()
        if self.auto is not None:
            self.metrics.auto_budget.set(self.router.budgets[self.auto.choose()])

    def authorise(self, request: Request) -> None:
        client = request.client.host if request.client else None
        check_access(request.headers.get("authorization"), client, self.api_key, self.spec.allow_remote_without_key)

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self.authorise(request)
        data = [
            {"id": name, "object": "model", "owned_by": "mqt-llava", "visual_tokens": self.router.budgets[name]}
            for name in self.router.model_ids
        ]
        if self.auto is not None:
            data.append({"id": "auto", "object": "model", "owned_by": "mqt-llava", "visual_tokens": None})
        return {"object": "list", "data": data}

    @app.get("/v1/auto")
    async def auto_state(self, request: Request) -> dict:
        """What `auto` routes to now, the latency percentile it acts on, and its last decisions (this
        ingress replica's)."""
        self.authorise(request)
        if self.auto is None:
            raise ApiError(404, "auto routing is not enabled on this server", code="model_not_found")
        return self.auto.state()

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request):
        started, tier = time.monotonic(), None
        try:
            self.authorise(request)
            check_content_type(request.headers.get("content-type"))
            chat = parse_body(await read_body(request, self.spec), self.spec)
            auto = self.auto is not None and chat.model == "auto" and chat.visual_tokens is None
            tier = self.auto.choose() if auto else self.router.route(chat.model, chat.visual_tokens)
            job = build_job(chat, self.spec, self.maximum, self.minimum)
            if self.shared and job.visual_tokens is None:
                job.visual_tokens = self.router.budgets[tier]
            if chat.stream:
                include_usage = chat.stream_options is not None and chat.stream_options.include_usage
                return await self.stream(job, tier, auto, include_usage, started)
            result = raise_if_error(await self.tiers[tier].answer(job))
        except ApiError as exc:
            self.metrics.refused(tier, exc.status)
            raise
        elapsed = time.monotonic() - started
        self.answered(tier, auto, False, result, elapsed, elapsed)
        body = completion_body(
            tier,
            result["text"],
            result["finish_reason"],
            result["prompt_tokens"],
            result["completion_tokens"],
            result["visual_tokens"],
        )
        return JSONResponse(body)

    async def stream(self, job: Job, tier: str, auto: bool, include_usage: bool, started: float):
        """Server-sent events from the tier's stream. Its first item is awaited before the response
        starts, so a refusal (context length) is still an HTTP error, not an event."""
        items = self.tiers[tier].stream(job)
        first = raise_if_error(await items.__anext__())
        first_token_s = time.monotonic() - started
        writer = ChunkWriter(tier, include_usage)

        async def events() -> AsyncIterator[bytes]:
            yield writer.role()
            item, ended = first, False
            try:
                while "delta" in item:
                    yield writer.content(item["delta"])
                    item = await items.__anext__()
                ended = True
            except Exception as exc:  # the replica failed mid-stream: the headers are sent, so an event says so
                ended = True
                yield writer.error(ApiError(500, f"generation failed: {type(exc).__name__}", type_="server_error"))
                return
            finally:
                if not ended:
                    items.cancel()  # the client went away: the tier stops generating
            self.answered(tier, auto, True, item, first_token_s, time.monotonic() - started)
            yield writer.end(
                item["finish_reason"], item["prompt_tokens"], item["completion_tokens"], item["visual_tokens"]
            )

        return StreamingResponse(events(), media_type="text/event-stream")

    def identity(self) -> dict:
        """This replica's process, and the model it holds (`shared.in_ingress`) as TierModel.identity."""
        return self.model.identity() if self.model is not None else {"pid": os.getpid()}

    def answered(
        self, tier: str, auto: bool, stream: bool, result: dict, first_token_s: float, latency_s: float
    ) -> None:
        self.metrics.answered(
            tier,
            stream,
            result["visual_tokens"],
            result["prompt_tokens"],
            result["completion_tokens"],
            first_token_s,
            latency_s,
        )
        if auto:
            self.auto.observe(tier, latency_s)
            self.metrics.auto_budget.set(self.router.budgets[self.auto.choose()])


def replica_options(replica: ReplicaSpec) -> dict:
    """A deployment's replica count, or its autoscaling when max_replicas > min_replicas."""
    if replica.max_replicas > replica.min_replicas:
        return {
            "autoscaling_config": {
                "min_replicas": replica.min_replicas,
                "max_replicas": replica.max_replicas,
                "target_ongoing_requests": replica.target_ongoing_requests,
            }
        }
    return {"num_replicas": replica.min_replicas}


def build(args: dict) -> serve.Application:
    """The application for `args` (a ServeSpec as a dict): tiers (or the one shared deployment), then
    the ingress; or the ingress alone, holding the shared model (`shared.in_ingress`)."""
    spec = ServeSpec(**args)
    minimum, maximum = visual_token_range(spec.model)
    budgets = {t.name: t.budget(maximum, minimum) for t in spec.tiers}
    placement = Placement.for_cluster(spec.use_gpu)
    ingress = {"num_cpus": spec.ingress_cpus}
    front = (spec.model_dump(), (minimum, maximum), budgets)

    if spec.shared is not None and spec.shared.in_ingress:  # proxy -> ingress with the model: one hop
        shared = spec.shared
        options = {"num_cpus": spec.ingress_cpus + shared.replica_cpus, "num_gpus": placement.num_gpus}
        return Ingress.options(
            ray_actor_options=options, max_ongoing_requests=spec.ingress_max_ongoing_requests, **replica_options(shared)
        ).bind(*front, None, placement.use_gpu)

    def deployment(name: str, replica: ReplicaSpec, budget: int):
        return Tier.options(
            name=name,
            user_config=user_config(replica, budget),
            ray_actor_options={"num_cpus": replica.replica_cpus, "num_gpus": placement.num_gpus},
            # Serve's default of 5 requests in flight per replica would cap every tier's batches at 5.
            max_ongoing_requests=max(2 * replica.max_batch_size, 16),
            **replica_options(replica),
        ).bind(spec.model, spec.engine, replica.torch_threads, placement.use_gpu)

    if spec.shared is not None:  # one set of weights: every tier's requests, each at its own budget
        one = deployment("shared-tiers", spec.shared, maximum)
        tiers = {t.name: one for t in spec.tiers}
    else:
        tiers = {t.name: deployment(f"tier-{t.name}", t, budgets[t.name]) for t in spec.tiers}
    return Ingress.options(ray_actor_options=ingress, max_ongoing_requests=spec.ingress_max_ongoing_requests).bind(
        *front, tiers
    )


def run_on_loopback(args: dict, name: str, logging_config: dict | None = None) -> str:
    """Deploy `build(args)` on this machine's Ray, Serve listening on a free 127.0.0.1 port; returns
    its base URL (what the quickstart and benchmarks/serve_load.py use; a cluster uses serve deploy)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=logging_config)
    serve.run(build(args), name=name, route_prefix="/", logging_config=logging_config)
    return f"http://127.0.0.1:{port}"
