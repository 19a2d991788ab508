"""Request checks: every bad request becomes an OpenAI-style error with the right status."""

import base64
import io

import pytest
from PIL import Image

from mqt_llava.serve.api import (
    ApiError,
    ChatRequest,
    ChunkWriter,
    api_key_from_env,
    build_job,
    check_access,
    check_content_type,
    completion_body,
    context_error,
    json_depth,
    parse_body,
)
from mqt_llava.serve.settings import ServeSpec, TierSpec

SPEC = ServeSpec(model="/x", tiers=[TierSpec(name="fast", visual_tokens=2)], max_image_pixels=64 * 64)


def data_url(image: Image.Image, fmt="PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def request(content, **kw) -> ChatRequest:
    return ChatRequest(model="fast", messages=[{"role": "user", "content": content}], **kw)


def parts(text="What colour?", url=None):
    out = [{"type": "text", "text": text}]
    if url is not None:
        out.append({"type": "image_url", "image_url": {"url": url}})
    return out


def test_a_good_request_becomes_a_job():
    image = Image.new("RGB", (20, 10), (255, 0, 0))
    job = build_job(request(parts(url=data_url(image)), max_tokens=5, temperature=0, stop="."), SPEC, 32)
    assert job.question == "What colour?" and job.image.size == (20, 10) and job.image.getpixel((0, 0)) == (255, 0, 0)
    assert (job.max_tokens, job.temperature, job.stop, job.visual_tokens) == (5, 0.0, ["."], None)
    text_only = build_job(request("Hi there", visual_tokens=32), SPEC, 32)
    assert text_only.image is None and text_only.visual_tokens == 32 and text_only.max_tokens == 64


@pytest.mark.parametrize(
    "make, status, fragment",
    [
        (lambda: request(parts(url="data:image/png;base64,@@@")), 400, "does not decode"),
        (
            lambda: request(parts(url="data:image/png;base64," + base64.b64encode(b"not an image").decode())),
            400,
            "not a usable image",
        ),
        (lambda: request(parts(url=data_url(Image.new("RGB", (65, 64))))), 413, "pixel limit"),
        (lambda: request(parts(url="https://example.com/cat.jpg")), 400, "remote image URLs are disabled"),
        (lambda: request(parts(url="ftp://x")), 400, "base64 data URL"),
        (lambda: request(parts() + parts("", data_url(Image.new("RGB", (4, 4))))[1:] * 2), 400, "at most 1"),
        (lambda: request("hi", visual_tokens=33), 400, "visual_tokens: 33 outside 1..32"),
        (lambda: request("hi", visual_tokens=0), 400, "visual_tokens: 0 outside 1..32"),
        (lambda: request(parts(text="")), 400, "no text and no image"),
        (lambda: request("hi", max_tokens=10_000), 400, "above this server's limit"),
        (
            lambda: ChatRequest(
                model="fast", messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
            ),
            400,
            "ending with",
        ),
        (
            lambda: ChatRequest(
                model="fast", messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
            ),
            400,
            "alternating",
        ),
        (lambda: request("hi", n=2), 400, "n = 2"),
    ],
)
def test_bad_requests_get_an_openai_error(make, status, fragment):
    with pytest.raises(ApiError) as caught:
        build_job(make(), SPEC, 32)
    assert caught.value.status == status and fragment in caught.value.message
    body = caught.value.body()["error"]
    assert body["message"] == caught.value.message and body["type"] == "invalid_request_error"


def test_response_body_shape():
    body = completion_body("fast", "Red", "stop", 40, 2, 16)
    assert body["object"] == "chat.completion" and body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Red",
    }
    assert body["usage"] == {"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42}
    assert body["visual_tokens"] == 16


def test_tier_budgets_and_spec_checks():
    assert TierSpec(name="full", visual_tokens="M").budget(32) == 32
    with pytest.raises(ValueError, match="outside 1..32"):
        TierSpec(name="big", visual_tokens=64).budget(32)
    with pytest.raises(ValueError, match="unique"):
        ServeSpec(model="/x", tiers=[TierSpec(name="a", visual_tokens=2), TierSpec(name="a", visual_tokens=4)])


def test_a_conversation_becomes_history_with_the_system_prompt_and_one_image():
    image = data_url(Image.new("RGB", (8, 8), (0, 255, 0)))
    chat = ChatRequest(
        model="fast",
        top_p=0.5,
        seed=3,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]},  # image only
        ],
    )
    job = build_job(chat, SPEC, 32)
    assert job.system == "Be brief." and job.history == (("Hello", "Hi."),) and job.question == ""
    assert job.image.getpixel((0, 0)) == (0, 255, 0)  # given in the second user turn; the prompt puts it first
    assert (job.sampling().top_p, job.sampling().seed) == (0.5, 3)
    assert job.request().history == (("Hello", "Hi."),)


def test_request_bodies_meet_their_limits():
    spec = SPEC.model_copy(update={"max_body_bytes": 300_000, "max_json_depth": 8})
    good = b'{"model": "fast", "messages": [{"role": "user", "content": "a \\" [[[[[[[[[ \\""}]}'
    assert json_depth(good) == 3  # brackets inside strings (escaped quotes included) do not count
    assert parse_body(good, spec).messages[0].content == 'a " [[[[[[[[[ "'
    cases = [
        (b"[" * 100_000 + b"]" * 100_000, 400, "nests 100000 deep"),
        (b'{"model": "' + b"x" * 300_000 + b'"}', 413, "over 300000 bytes"),
        (b'{"model": ', 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 400, "a JSON object"),
        (b'{"model": "fast", "messages": []}', 400, "messages"),
    ]
    for raw, status, fragment in cases:
        with pytest.raises(ApiError) as caught:
            parse_body(raw, spec)
        assert caught.value.status == status and fragment in caught.value.message, raw[:40]


def test_content_type_and_access_checks():
    check_content_type("application/json; charset=utf-8")
    for bad in (None, "text/plain", "application/x-www-form-urlencoded"):
        with pytest.raises(ApiError) as caught:
            check_content_type(bad)
        assert caught.value.status == 415
    check_access("Bearer s3cret", "10.0.0.9", "s3cret", False)
    for header in (None, "Bearer s3cre", "Bearer s3cret ", "s3cret"):
        with pytest.raises(ApiError) as caught:
            check_access(header, "127.0.0.1", "s3cret", False)
        assert caught.value.status == 401 and caught.value.code == "invalid_api_key"
    check_access(None, "127.0.0.1", None, False)
    check_access(None, "::1", None, False)
    check_access(None, "10.0.0.9", None, True)
    with pytest.raises(ApiError) as caught:
        check_access(None, "10.0.0.9", None, False)
    assert caught.value.status == 403


def test_a_named_but_unset_key_variable_stops_the_app(monkeypatch):
    spec = SPEC.model_copy(update={"api_key_env": "MQT_TEST_KEY"})
    monkeypatch.delenv("MQT_TEST_KEY", raising=False)
    with pytest.raises(RuntimeError, match="MQT_TEST_KEY"):
        api_key_from_env(spec)
    monkeypatch.setenv("MQT_TEST_KEY", "k")
    assert api_key_from_env(spec) == "k" and api_key_from_env(SPEC) is None


def test_context_errors_name_the_numbers():
    assert context_error(400, 112, 512) is None
    error = context_error(12033, 64, 1024)
    assert error.status == 400 and error.code == "context_length_exceeded"
    assert "1024" in error.message and "12097" in error.message and "12033" in error.message
    assert ApiError(**error.fields()).body() == error.body()  # what a replica hands back rebuilds


def test_stream_chunks_follow_openai():
    import json

    writer = ChunkWriter("fast", include_usage=True)
    events = (writer.role() + writer.content("Re") + writer.end("stop", 40, 2, 16)).decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Re"} and chunks[1]["usage"] is None
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["total_tokens"] == 42
    assert len({c["id"] for c in chunks}) == 1
