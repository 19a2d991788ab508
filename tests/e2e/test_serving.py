"""The Serve application on a real Ray Serve on loopback, driven by the official openai client and
by raw HTTP for the requests that client would refuse to send."""

import base64
import io
import time

import openai
import pytest
import requests
import torch
import yaml
from loopback import free_port
from PIL import Image
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.schema import ServeDeploySchema

from checkout import REPO_ROOT
from mqt_llava.model.builder import build_model
from mqt_llava.model.export import save_export
from mqt_llava.toy.world import random_scene, render_scene
from small_model import small_spec

pytestmark = pytest.mark.e2e
APP = "mqt-llava"


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


KEYED = "mqt-llava-keyed"  # a second application: an API key, and every tier on one model in the ingress
KEY = "s3cret-test-key"


def application(export, overrides=(), name=APP, **args) -> dict:
    """serve_apps/config.yaml's application with this test's export and tiers."""
    config = yaml.safe_load((REPO_ROOT / "serve_apps" / "config.yaml").read_text())
    app = config["applications"][0]
    app["args"] |= {
        "model": str(export),
        "max_image_pixels": 150 * 150,
        "max_body_bytes": 2 * 1024 * 1024,
        "tiers": [
            {"name": "fast", "visual_tokens": 2, "max_batch_size": 4, "replica_cpus": 0.1},
            {"name": "full", "visual_tokens": "M", "max_batch_size": 4, "replica_cpus": 0.1},
        ],
        **args,
    }
    app["deployments"] = list(overrides)
    if name != APP:
        app |= {"name": name, "route_prefix": f"/{name}"}
    return app


def deploy(export, overrides=()):
    """Both applications deployed as `serve deploy` does (the declarative API: same code and args = a
    config-only update)."""
    keyed = application(
        export,
        [{"name": "Ingress", "ray_actor_options": {"runtime_env": {"env_vars": {"MQT_TEST_KEY": KEY}}}}],
        KEYED,
        api_key_env="MQT_TEST_KEY",
        shared={"replica_cpus": 0.1},
    )
    schema = ServeDeploySchema(applications=[application(export, overrides), keyed])
    _get_global_client().deploy_apps(schema, _blocking=True)
    for _ in range(240):
        apps = serve.status().applications
        if all(a in apps and apps[a].status == "RUNNING" for a in (APP, KEYED)):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{APP} did not start: {serve.status()}")


@pytest.fixture(scope="module")
def server(ray_local, tmp_path_factory):
    export = tmp_path_factory.mktemp("serve-export")
    torch.manual_seed(0)  # the model of tests/test_inference.py: answers long enough to stop inside
    save_export(build_model(small_spec()), export)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy(export)
    yield export, f"http://127.0.0.1:{port}"
    serve.delete(APP)
    serve.delete(KEYED)
    serve.shutdown()


def chat(content, model="fast", **kw):
    return {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, **kw}


def image_parts(text="What colour is the circle?", size=(48, 32)):
    return [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": data_url(render_scene(random_scene(1), *size))}},
    ]


def test_openai_client_gets_answers_and_tiers_use_their_budgets(server):
    _, url = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["fast", "full", "auto"]
    fast = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": image_parts()}], temperature=0, max_tokens=6
    )
    full = client.chat.completions.create(
        model="full", messages=[{"role": "user", "content": image_parts()}], temperature=0, max_tokens=6
    )
    assert isinstance(fast.choices[0].message.content, str) and fast.choices[0].finish_reason in ("stop", "length")
    assert (fast.model_extra["visual_tokens"], full.model_extra["visual_tokens"]) == (2, 8)
    assert full.usage.prompt_tokens - fast.usage.prompt_tokens == 6  # the visual tokens are counted
    assert 1 <= fast.usage.completion_tokens <= 6
    exact = client.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": image_parts()}],
        temperature=0,
        max_tokens=6,
        extra_body={"visual_tokens": 5},
    )
    assert exact.model_extra["visual_tokens"] == 5 and exact.model == "full"  # nearest tier (a tie: the larger)
    assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    auto = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": image_parts()}], temperature=0, max_tokens=6
    )
    assert auto.model == "full" and auto.model_extra["visual_tokens"] == 8  # idle: the largest budget


GOOD = chat(image_parts(), max_tokens=4)


def with_url(url):
    return chat([{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}])


NOT_AN_IMAGE = "data:image/png;base64," + base64.b64encode(b"nope").decode()
BAD = [
    (b"{not json", 400),
    (chat("hi") | {"messages": []}, 400),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400),  # no model
    (with_url("data:image/png;base64,@@"), 400),  # bad base64
    (with_url(NOT_AN_IMAGE), 400),
    (chat(image_parts(size=(200, 200))), 413),  # over the pixel limit
    (chat("hi", visual_tokens=9), 400),  # M is 8
    (chat("hi", model="gpt-4o"), 404),
    (chat(image_parts() + image_parts()[1:]), 400),  # two images
    (with_url("http://example.com/a.png"), 400),  # remote URLs are off
]


@pytest.mark.parametrize("body, status", BAD, ids=[f"{i}-{s}" for i, (_, s) in enumerate(BAD)])
def test_bad_requests_get_their_status_and_the_server_stays_up(server, body, status):
    _, url = server
    sent = body if isinstance(body, bytes) else None
    response = requests.post(
        f"{url}/v1/chat/completions",
        data=sent,
        json=None if sent else body,
        timeout=60,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) >= {"message", "type"}
    assert requests.post(f"{url}/v1/chat/completions", json=GOOD, timeout=60).status_code == 200


def test_a_new_budget_through_user_config_without_reloading(server):
    export, url = server
    tier = serve.get_deployment_handle("tier-fast", app_name=APP)
    before = tier.options(method_name="identity").remote().result()
    deploy(
        export,
        [{"name": "tier-fast", "user_config": {"visual_tokens": 3, "max_batch_size": 4, "batch_wait_timeout_s": 0.02}}],
    )
    assert requests.post(f"{url}/v1/chat/completions", json=GOOD, timeout=60).json()["visual_tokens"] == 3
    after = tier.options(method_name="identity").remote().result()
    assert after["engine"] == before["engine"] and after["budget"] == 3 != before["budget"]  # same loaded model


def client_for(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def ask(client, content, model="fast", **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **{"temperature": 0} | kw
    )


def test_streaming_with_the_openai_client_adds_up_to_the_answer(server):
    _, url = server
    client = client_for(url)
    for content in (image_parts(), "Name a colour."):
        whole = ask(client, content, max_tokens=8)
        chunks = list(ask(client, content, max_tokens=8, stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finish == [whole.choices[0].finish_reason]
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    plain = list(ask(client, "Hi", max_tokens=4, stream=True))
    assert all(c.usage is None for c in plain)  # usage only when stream_options asks for it


def test_conversations_system_prompts_image_only_stop_and_seed(server):
    _, url = server
    client = client_for(url)
    single = ask(client, image_parts(), max_tokens=4)
    turns = client.chat.completions.create(
        model="fast",
        temperature=0,
        max_tokens=4,
        messages=[
            {"role": "user", "content": image_parts()},
            {"role": "assistant", "content": "Red."},
            {"role": "user", "content": "And the square?"},
        ],
    )
    assert turns.usage.prompt_tokens > single.usage.prompt_tokens
    system = client.chat.completions.create(
        model="fast",
        temperature=0,
        max_tokens=4,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": image_parts()}],
    )
    assert system.usage.prompt_tokens < single.usage.prompt_tokens  # the template's long system prompt replaced
    assert ask(client, image_parts()[1:], max_tokens=4).usage.prompt_tokens > 2  # an image and no text
    sampled = [
        ask(client, "Hi", max_tokens=8, temperature=1.5, top_p=0.9, seed=11).choices[0].message.content
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]
    with pytest.raises(openai.BadRequestError, match="n = 2"):
        ask(client, "Hi", n=2)
    full = ask(client, image_parts(), max_tokens=16)
    ascii_ = [c for c in full.choices[0].message.content[1:] if c.isascii() and c.isalnum()]
    assert ascii_, f"the answer {full.choices[0].message.content!r} has nothing to stop at"
    cut = ask(client, image_parts(), max_tokens=16, stop=[ascii_[0]])
    assert cut.choices[0].finish_reason == "stop" and cut.usage.completion_tokens < full.usage.completion_tokens
    assert cut.choices[0].message.content == full.choices[0].message.content.split(ascii_[0])[0]


def test_limits_refuse_with_openai_errors_and_spare_batch_mates(server):
    import concurrent.futures

    _, url = server
    endpoint = f"{url}/v1/chat/completions"
    cases = [
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),  # nested 100,000 deep
        (b"{" + b" " * (3 * 1024 * 1024) + b"}", "application/json", 413),  # over max_body_bytes
        (b"{}", "text/plain", 415),
    ]
    for body, content_type, status in cases:
        response = requests.post(endpoint, data=body, headers={"Content-Type": content_type}, timeout=60)
        assert response.status_code == status and "message" in response.json()["error"], response.text[:200]
    long = chat("word " * 600, max_tokens=4)  # over the 512-position context
    with concurrent.futures.ThreadPoolExecutor(6) as pool:  # long and good requests batched together
        futures = [pool.submit(requests.post, endpoint, json=long if i % 2 else GOOD, timeout=120) for i in range(6)]
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200, 400] * 3
    error = responses[1].json()["error"]
    assert error["code"] == "context_length_exceeded" and "512" in error["message"]


def test_the_key_is_required_and_one_deployment_serves_every_budget(server):
    _, url = server
    keyed = f"{url}/{KEYED}"
    for key in ("unused", KEY + "x"):
        with pytest.raises(openai.AuthenticationError):
            ask(client_for(keyed, key), "Hi", max_tokens=2)
    client = client_for(keyed, KEY)
    budgets = {
        model: ask(client, image_parts(), model=model, max_tokens=4).model_extra["visual_tokens"]
        for model in ("fast", "full")
    }
    assert budgets == {"fast": 2, "full": 8}
    deployments = serve.status().applications[KEYED].deployments
    assert set(deployments) == {"Ingress"}  # one set of weights for both budgets, held by the ingress
    held = serve.get_deployment_handle("Ingress", app_name=KEYED).options(method_name="identity").remote().result()
    assert held["budget"] == 8  # M: each request carries its tier's budget
    streamed = list(ask(client, "Hi", max_tokens=4, stream=True))
    assert streamed[-1].choices[0].finish_reason in ("stop", "length")


def test_auto_decisions_and_metrics_are_visible(server, ray_local):
    import ray

    _, url = server
    state = requests.get(f"{url}/v1/auto", timeout=10).json()
    assert state["tier"] == "full" and state["quantile"] == 0.95 and isinstance(state["decisions"], list)
    requests.post(f"{url}/v1/chat/completions", json=chat("Hi", model="auto", max_tokens=2), timeout=60)
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    wanted = [
        "ray_mqt_requests",
        "ray_mqt_visual_tokens_bucket",
        "ray_mqt_time_to_first_token_s_bucket",
        "ray_mqt_prompt_tokens",
        "ray_mqt_auto_budget",
    ]
    for _ in range(90):  # Ray exports metrics every few seconds
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(name in text for name in wanted) and 'status="415"' in text:
            break
        time.sleep(1)
    missing = [name for name in wanted + ['status="415"'] if name not in text]
    assert not missing, f"not on Ray's metrics endpoint: {missing}"
