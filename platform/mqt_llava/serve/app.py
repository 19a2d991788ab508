"""The MQT-LLaVA Ray Serve application: one deployment per budget tier, behind an OpenAI-compatible
FastAPI ingress.

    serve run serve_apps/config.yaml                 # development, on this machine
    serve deploy serve_apps/config.yaml              # a running cluster (RAY_ADDRESS / --address)

`build(args)` is the application builder `config.yaml` names (`mqt_llava.serve.app:build`); `args`
is a `ServeSpec`. The tiers talk to the model only through the `Engine` interface
(mqt_llava.inference), so a second backend is chosen by the spec's `engine`, with this file unchanged.
"""

import asyncio
import json
import os
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle

from mqt_llava.devices import Placement, load_placed_engine
from mqt_llava.inference import Request as EngineRequest
from mqt_llava.inference import Sampling, complete_grouped
from mqt_llava.model.budgets import check_budget
from mqt_llava.model.export import visual_token_range
from mqt_llava.serve.api import ApiError, ChatRequest, Job, build_job, completion_body
from mqt_llava.serve.auto import AutoRouter
from mqt_llava.serve.routing import Router
from mqt_llava.serve.settings import ServeSpec

app = FastAPI(title="MQT-LLaVA", docs_url=None, redoc_url=None)


@app.exception_handler(ApiError)
async def api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


@serve.deployment
class Tier:
    """Replicas of one budget tier. `user_config` ({visual_tokens, max_batch_size,
    batch_wait_timeout_s}) is applied by `reconfigure`, without reloading the model."""

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

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def generate(self, jobs: list[Job]) -> list[dict]:
        """The requests Serve gathered into one batch, answered by the engine (one call per group that
        can share a batch); a worker thread keeps the replica's loop responsive meanwhile."""
        work = [(EngineRequest(j.question, j.image), j.visual_tokens or self.visual_tokens,
                 Sampling(j.max_tokens, j.temperature, tuple(j.stop))) for j in jobs]  # fmt: skip
        completions = await asyncio.get_running_loop().run_in_executor(None, complete_grouped, self.engine, work)
        return [{"text": c.text, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                 "completion_tokens": c.completion_tokens, "visual_tokens": m}
                for c, (_, m, _) in zip(completions, work, strict=True)]  # fmt: skip

    async def __call__(self, job: Job) -> dict:
        return await self.generate(job)

    def identity(self) -> dict:
        """Which loaded model this replica holds, and its budget (tests check a reconfigure keeps the model)."""
        return {"engine": f"{os.getpid()}:{id(self.engine)}", "budget": self.visual_tokens}


@serve.deployment
@serve.ingress(app)
class Ingress:
    def __init__(
        self, spec: dict, token_range: tuple[int, int], budgets: dict[str, int], tiers: dict[str, DeploymentHandle]
    ) -> None:
        self.spec = ServeSpec(**spec)
        self.minimum, self.maximum = token_range
        self.router = Router(budgets)
        self.auto = AutoRouter(budgets, self.spec.auto) if self.spec.auto.enabled else None
        self.tiers = tiers
        self.api_key = os.environ.get(self.spec.api_key_env) if self.spec.api_key_env else None

    def authorise(self, request: Request) -> None:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise ApiError(401, "invalid or missing API key", type_="authentication_error", code="invalid_api_key")

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(self, request: Request) -> dict:
        self.authorise(request)
        data = [{"id": name, "object": "model", "owned_by": "mqt-llava", "visual_tokens": self.router.budgets[name]}
                for name in self.router.model_ids]  # fmt: skip
        if self.auto is not None:
            data.append({"id": "auto", "object": "model", "owned_by": "mqt-llava", "visual_tokens": None})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> JSONResponse:
        self.authorise(request)
        try:
            payload = json.loads(await request.body())
            chat = ChatRequest.model_validate(payload)
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ApiError(400, f"{where}: {first['msg']}", param=where) from None
        if chat.stream:
            raise ApiError(400, "streaming is not supported yet", param="stream")
        started = time.monotonic()
        auto = self.auto is not None and chat.model == "auto" and chat.visual_tokens is None
        tier = self.auto.choose() if auto else self.router.route(chat.model, chat.visual_tokens)
        job = build_job(chat, self.spec, self.maximum, self.minimum)
        result = await self.tiers[tier].remote(job)
        if auto:
            self.auto.observe(tier, time.monotonic() - started)
        body = completion_body(tier, result["text"], result["finish_reason"], result["prompt_tokens"],
                               result["completion_tokens"], result["visual_tokens"])  # fmt: skip
        return JSONResponse(body)


def build(args: dict) -> serve.Application:
    """The application for `args` (a ServeSpec as a dict): tiers first, then the ingress."""
    spec = ServeSpec(**args)
    minimum, maximum = visual_token_range(spec.model)
    budgets = {t.name: t.budget(maximum, minimum) for t in spec.tiers}
    placement = Placement.for_cluster(spec.use_gpu)
    tiers = {}
    for t in spec.tiers:
        autoscaling = None
        if t.max_replicas > t.min_replicas:
            autoscaling = {"min_replicas": t.min_replicas, "max_replicas": t.max_replicas,
                           "target_ongoing_requests": t.target_ongoing_requests}  # fmt: skip
        options = dict(
            name=f"tier-{t.name}",
            user_config={
                "visual_tokens": budgets[t.name],
                "max_batch_size": t.max_batch_size,
                "batch_wait_timeout_s": t.batch_wait_timeout_s,
            },  # fmt: skip
            ray_actor_options={"num_cpus": t.replica_cpus, "num_gpus": placement.num_gpus},
            max_ongoing_requests=max(2 * t.max_batch_size, 16),
        )
        options |= {"autoscaling_config": autoscaling} if autoscaling else {"num_replicas": t.min_replicas}
        tiers[t.name] = Tier.options(**options).bind(spec.model, spec.engine, t.torch_threads, placement.use_gpu)
    # Serve's default of 5 requests in flight per replica would cap every tier's batches at 5.
    ingress = {"num_cpus": spec.ingress_cpus}
    return Ingress.options(ray_actor_options=ingress, max_ongoing_requests=spec.ingress_max_ongoing_requests).bind(
        spec.model_dump(), (minimum, maximum), budgets, tiers
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
