"""The Serve application on a real Ray Serve on loopback, driven by the official openai client and
by raw HTTP for the requests that client would refuse to send."""

import base64
import io
import time

import openai
import pytest
import requests
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


def deploy(export, overrides=()):
    """serve_apps/config.yaml with this test's export and tiers, deployed as `serve deploy` does (the
    declarative API: same code and args = a config-only update)."""
    config = yaml.safe_load((REPO_ROOT / "serve_apps" / "config.yaml").read_text())
    app = config["applications"][0]
    app["args"] |= {
        "model": str(export),
        "max_image_pixels": 150 * 150,
        "tiers": [
            {"name": "fast", "visual_tokens": 2, "max_batch_size": 4, "replica_cpus": 0.1},
            {"name": "full", "visual_tokens": "M", "max_batch_size": 4, "replica_cpus": 0.1},
        ],
    }
    app["deployments"] = list(overrides)
    _get_global_client().deploy_apps(ServeDeploySchema(applications=[app]), _blocking=True)
    for _ in range(240):
        status = serve.status().applications.get(APP)
        if status is not None and status.status == "RUNNING":
            return
        time.sleep(0.5)
    raise TimeoutError(f"{APP} did not start: {serve.status()}")


@pytest.fixture(scope="module")
def server(ray_local, tmp_path_factory):
    export = tmp_path_factory.mktemp("serve-export")
    save_export(build_model(small_spec()), export)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy(export)
    yield export, f"http://127.0.0.1:{port}"
    serve.delete(APP)
    serve.shutdown()


def chat(content, model="fast", **kw):
    return {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0, **kw}


def image_parts(text="What colour is the circle?", size=(48, 32)):
    return [{"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": data_url(render_scene(random_scene(1), *size))}}]  # fmt: skip


def test_openai_client_gets_answers_and_tiers_use_their_budgets(server):
    _, url = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["fast", "full", "auto"]
    fast = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": image_parts()}],
                                          temperature=0, max_tokens=6)  # fmt: skip
    full = client.chat.completions.create(model="full", messages=[{"role": "user", "content": image_parts()}],
                                          temperature=0, max_tokens=6)  # fmt: skip
    assert isinstance(fast.choices[0].message.content, str) and fast.choices[0].finish_reason in ("stop", "length")
    assert (fast.model_extra["visual_tokens"], full.model_extra["visual_tokens"]) == (2, 8)
    assert full.usage.prompt_tokens - fast.usage.prompt_tokens == 6  # the visual tokens are counted
    assert 1 <= fast.usage.completion_tokens <= 6
    exact = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": image_parts()}],
                                           temperature=0, max_tokens=6, extra_body={"visual_tokens": 5})  # fmt: skip
    assert exact.model_extra["visual_tokens"] == 5 and exact.model == "full"  # nearest tier (a tie: the larger)
    assert requests.get(f"{url}/health", timeout=10).json() == {"status": "ok"}
    auto = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": image_parts()}],
                                          temperature=0, max_tokens=6)  # fmt: skip
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
    response = requests.post(f"{url}/v1/chat/completions", data=sent, json=None if sent else body, timeout=60,
                             headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) >= {"message", "type"}
    assert requests.post(f"{url}/v1/chat/completions", json=GOOD, timeout=60).status_code == 200


def test_a_new_budget_through_user_config_without_reloading(server):
    export, url = server
    tier = serve.get_deployment_handle("tier-fast", app_name=APP)
    before = tier.options(method_name="identity").remote().result()
    deploy(export, [{"name": "tier-fast", "user_config": {"visual_tokens": 3, "max_batch_size": 4,
                                                           "batch_wait_timeout_s": 0.02}}])  # fmt: skip
    assert requests.post(f"{url}/v1/chat/completions", json=GOOD, timeout=60).json()["visual_tokens"] == 3
    after = tier.options(method_name="identity").remote().result()
    assert after["engine"] == before["engine"] and after["budget"] == 3 != before["budget"]  # same loaded model
