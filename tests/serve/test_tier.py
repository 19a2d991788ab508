"""A tier's model without Ray: one bad request never fails its batch mates, and a stream stops
generating when its caller goes away."""

import asyncio
import threading

from mqt_llava.inference import InferenceEngine
from mqt_llava.serve.api import ApiError, Job
from mqt_llava.serve.app import LocalTier, TierModel
from mqt_llava.toy.world import random_scene, render_scene


def replica(engine) -> TierModel:
    tier = object.__new__(TierModel)  # the replica's model, its engine given instead of loaded
    tier.engine, tier.visual_tokens = engine, 4
    return tier


def job(question: str, image=None, **kw) -> Job:
    return Job(question, image, kw.pop("max_tokens", 6), 0.0, [], None, **kw)


class Faulty:
    """The engine, failing any batch that holds the question "boom" (a fault injected)."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def complete(self, requests, *args, **kwargs):
        if any(r.question == "boom" for r in requests):
            raise RuntimeError("injected fault")
        return self.engine.complete(requests, *args, **kwargs)


def test_an_over_long_request_is_refused_alone_with_the_numbers(built):
    engine = InferenceEngine.from_built(built)
    good = [job("What colour is it?", render_scene(random_scene(1), 40, 40)), job("Hi")]
    long = job("word " * 600)  # the small model's context is 512 positions
    results = replica(engine).answer([good[0], long, good[1]])
    error = ApiError(**results[1]["error"])
    assert error.status == 400 and error.code == "context_length_exceeded" and "512" in error.message
    for result, j in zip([results[0], results[2]], good, strict=True):
        assert result["text"] == engine.complete([j.request()], 4, 6)[0].text and result["visual_tokens"] == 4


def test_a_batch_the_engine_fails_on_is_retried_one_request_at_a_time(built):
    engine = InferenceEngine.from_built(built)
    jobs = [job("Name a colour."), job("boom"), job("Where is it?", render_scene(random_scene(2), 30, 50))]
    results = replica(Faulty(engine)).answer(jobs)
    assert results[1]["error"]["status"] == 500 and "injected fault" in results[1]["error"]["message"]
    assert [results[0]["text"], results[2]["text"]] == [
        engine.complete([j.request()], 4, 6)[0].text for j in (jobs[0], jobs[2])
    ]


class Endless:
    """An engine whose stream yields until its cancel event is set."""

    max_context = 512

    def __init__(self):
        self.cancelled = threading.Event()

    def prompt_tokens(self, request, m):
        return 1

    def stream(self, request, m, sampling, cancel):
        self.cancelled = cancel
        while not cancel.is_set():
            yield "a"


def test_a_stream_from_the_model_in_the_ingress_stops_when_cancelled():
    engine = Endless()

    async def scenario():
        items = LocalTier(replica(engine)).stream(job("Hi"))
        first = await items.__anext__()
        items.cancel()  # what the ingress does when the client goes away
        for _ in range(100):
            if engine.cancelled.is_set():
                break
            await asyncio.sleep(0.01)
        return first

    assert asyncio.run(scenario()) == {"delta": "a"}
    assert engine.cancelled.is_set()
