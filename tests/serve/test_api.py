"""Request checks: every bad request becomes an OpenAI-style error with the right status."""

import base64
import io

import pytest
from PIL import Image

from mqt_llava.serve.api import ApiError, ChatRequest, build_job, completion_body
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
        (lambda: request(parts(url="data:image/png;base64," + base64.b64encode(b"not an image").decode())), 400,
         "not a usable image"),
        (lambda: request(parts(url=data_url(Image.new("RGB", (65, 64))))), 413, "pixel limit"),
        (lambda: request(parts(url="https://example.com/cat.jpg")), 400, "remote image URLs are disabled"),
        (lambda: request(parts(url="ftp://x")), 400, "base64 data URL"),
        (lambda: request(parts() + parts("", data_url(Image.new("RGB", (4, 4))))[1:] * 2), 400, "at most 1"),
        (lambda: request("hi", visual_tokens=33), 400, "visual_tokens: 33 outside 1..32"),
        (lambda: request("hi", visual_tokens=0), 400, "visual_tokens: 0 outside 1..32"),
        (lambda: request(parts(text="")), 400, "no text"),
        (lambda: request("hi", max_tokens=10_000), 400, "above this server's limit"),
        (lambda: ChatRequest(model="fast", messages=[{"role": "user", "content": "a"},
                                                     {"role": "assistant", "content": "b"}]), 400, "single-turn"),
    ],
)  # fmt: skip
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
