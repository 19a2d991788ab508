"""The OpenAI chat-completions API as vLLM and SGLang accept it: request and response schemas, and
the checks that turn a request into one generation job or an OpenAI-style error."""

from __future__ import annotations

import base64
import binascii
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from mqt_llava.data.images import ImageError, decode_image
from mqt_llava.model.budgets import BudgetError, check_budget
from mqt_llava.serve.settings import ServeSpec


class ApiError(Exception):
    """An error the client caused (or a refusal); rendered as OpenAI's error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ImageURL(BaseModel):
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ChatRequest(BaseModel):
    """Fields OpenAI clients send and this server does not use (`n` = 1, `top_p`, ...) are accepted
    and ignored, as vLLM does."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)  # OpenAI's default; 0 = greedy
    stop: str | list[str] | None = None
    stream: bool = False
    visual_tokens: int | None = None  # this server's extension: the budget m, honoured exactly


@dataclass
class Job:
    """One generation, as a tier replica runs it."""

    question: str
    image: Image.Image | None
    max_tokens: int
    temperature: float
    stop: list[str]
    visual_tokens: int | None  # None: the tier's budget


DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]*)(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.DOTALL)


def decode_data_url(url: str, spec: ServeSpec) -> Image.Image:
    match = DATA_URL.match(url)
    if match is None:
        raise ApiError(400, "image_url must be a base64 data URL (data:image/...;base64,...)", param="messages")
    try:
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            400, "image_url: the base64 data does not decode", param="messages", code="invalid_image"
        ) from None
    return open_image(data, spec)


def open_image(data: bytes, spec: ServeSpec) -> Image.Image:
    if len(data) > spec.max_image_bytes:
        raise ApiError(413, f"image is {len(data)} bytes; the limit is {spec.max_image_bytes}", code="image_too_large")
    try:
        return decode_image(data, max_pixels=spec.max_image_pixels)
    except ImageError as exc:
        if exc.reason == "image_too_large":
            raise ApiError(413, f"image: {exc}", param="messages", code="image_too_large") from None
        raise ApiError(400, f"image_url: not a usable image ({exc})", param="messages", code="invalid_image") from None


def fetch_image(url: str, spec: ServeSpec) -> Image.Image:
    import requests

    try:
        response = requests.get(url, timeout=10, stream=True)
        response.raise_for_status()
        data = response.raw.read(spec.max_image_bytes + 1, decode_content=True)
    except requests.RequestException as exc:
        raise ApiError(400, f"image_url: could not fetch {url}: {exc}", param="messages") from None
    return open_image(data, spec)


def build_job(request: ChatRequest, spec: ServeSpec, maximum: int, minimum: int = 1) -> Job:
    """The request's question, image and sampling settings, checked; or an ApiError."""
    turns = [m for m in request.messages if m.role != "system"]
    if len(turns) != 1 or turns[0].role != "user":
        raise ApiError(400, "only single-turn requests are supported: one user message (a system message may "
                            "come first)", param="messages")  # fmt: skip
    content = turns[0].content
    parts = [ContentPart(type="text", text=content)] if isinstance(content, str) else content
    texts = [p.text or "" for p in parts if p.type == "text"]
    urls = [p.image_url.url for p in parts if p.type == "image_url" and p.image_url is not None]
    if any(p.type == "image_url" and p.image_url is None for p in parts):
        raise ApiError(400, "an image_url part needs image_url.url", param="messages")
    if len(urls) > spec.max_images:
        raise ApiError(400, f"{len(urls)} images; this model takes at most {spec.max_images}", param="messages")
    question = "\n".join(t for t in texts if t).strip()
    if not question:
        raise ApiError(400, "the user message has no text", param="messages")
    image = None
    if urls:
        url = urls[0]
        if url.startswith(("http://", "https://")):
            if not spec.allow_remote_images:
                raise ApiError(400, "remote image URLs are disabled on this server; send a base64 data URL",
                               param="messages")  # fmt: skip
            image = fetch_image(url, spec)
        else:
            image = decode_data_url(url, spec)
    if request.visual_tokens is not None:
        try:
            check_budget(request.visual_tokens, maximum, minimum=minimum)
        except BudgetError as exc:
            raise ApiError(400, str(exc), param="visual_tokens") from None
    max_tokens = request.max_completion_tokens or request.max_tokens or spec.default_max_tokens
    if max_tokens > spec.max_tokens_limit:
        raise ApiError(400, f"max_tokens {max_tokens} is above this server's limit {spec.max_tokens_limit}",
                       param="max_tokens")  # fmt: skip
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    return Job(question, image, max_tokens, request.temperature, stop, request.visual_tokens)


def completion_body(model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int,
                    visual_tokens: int) -> dict[str, Any]:  # fmt: skip
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "visual_tokens": visual_tokens,
    }
