"""A tier replica's batch handling, without Ray: one bad request never fails its batch mates."""

from mqt_llava.inference import InferenceEngine
from mqt_llava.serve.api import ApiError, Job
from mqt_llava.serve.app import Tier
from mqt_llava.toy.world import random_scene, render_scene


def replica(engine) -> Tier:
    tier = object.__new__(Tier.func_or_class)  # the replica class, its engine given instead of loaded
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
    assert [results[0]["text"], results[2]["text"]] == [engine.complete([j.request()], 4, 6)[0].text
                                                        for j in (jobs[0], jobs[2])]  # fmt: skip
