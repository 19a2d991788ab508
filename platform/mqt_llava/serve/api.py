"""The OpenAI chat-completions API as vLLM and SGLang accept it: request and response schemas, the
limits and access checks a request meets first, and the checks that turn it into one generation job
or an OpenAI-style error."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mqt_llava.data.images import ImageError, decode_image
from mqt_llava.inference import Request as EngineRequest
from mqt_llava.inference import Sampling
from mqt_llava.model.budgets import BudgetError, check_budget
from mqt_llava.serve.settings import ServeSpec


class ApiError(Exception):
    """An error the client caused (or a refusal); rendered as OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def fields(self) -> dict[str, Any]:
        """What `ApiError(**fields)` rebuilds: how a replica hands an error back over a handle."""
        return {
            "status": self.status,
            "message": self.message,
            "type_": self.type,
            "param": self.param,
            "code": self.code,
        }


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
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """Fields OpenAI clients send and this server does not use (`frequency_penalty`, `user`, ...) are
    accepted and ignored, as vLLM does."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)  # OpenAI's default; 0 = greedy
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    n: int = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
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
    history: tuple[tuple[str, str], ...] = ()
    system: str | None = None
    top_p: float = 1.0
    seed: int | None = None

    def request(self) -> EngineRequest:
        return EngineRequest(self.question, self.image, self.history, self.system)

    def sampling(self) -> Sampling:
        return Sampling(self.max_tokens, self.temperature, tuple(self.stop), self.top_p, self.seed)


# ---- limits and access, checked before a body is parsed ---------------------------------------

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_access(
    authorization: str | None, client_host: str | None, api_key: str | None, allow_remote_without_key: bool
) -> None:
    """With a key: the Bearer header must match it (compared in constant time), else 401. Without
    one: only loopback clients are served, unless the spec explicitly opens the server (403)."""
    if api_key:
        given = (authorization or "").encode()
        if not hmac.compare_digest(given, f"Bearer {api_key}".encode()):
            raise ApiError(401, "invalid or missing API key", type_="authentication_error", code="invalid_api_key")
        return
    if allow_remote_without_key or is_loopback(client_host):
        return
    raise ApiError(
        403,
        "this server has no API key and serves only loopback clients; set api_key_env (or allow_remote_without_key)",
        type_="permission_error",
        code="remote_without_key",
    )


def is_loopback(host: str | None) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def api_key_from_env(spec: ServeSpec) -> str | None:
    """The key `api_key_env` names; a named variable that is unset or empty stops the app from starting
    (it would otherwise serve without the key its operator asked for)."""
    if not spec.api_key_env:
        return None
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise RuntimeError(
            f"api_key_env is {spec.api_key_env!r} but that variable is unset or empty in the serving "
            "process: refusing to start without the key"
        )
    return key


async def read_body(request, spec: ServeSpec) -> bytes:
    """A Starlette request's body, refused (413) as soon as it passes max_body_bytes: by its declared
    length, or while it streams in."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        check_body_size(int(declared), spec)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        check_body_size(size, spec)
        chunks.append(chunk)
    return b"".join(chunks)


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ApiError(
            415, f"Content-Type must be application/json, got {content_type or 'none'!r}", code="unsupported_media_type"
        )


def check_body_size(size: int, spec: ServeSpec) -> None:
    if size > spec.max_body_bytes:
        raise ApiError(413, f"the request body is over {spec.max_body_bytes} bytes", code="request_too_large")


TOKENS = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)  # an escape pair, a quote, or a bracket


def json_depth(raw: bytes) -> int:
    """How deeply `raw`'s arrays and objects nest, found without parsing (a parser recurses, and a
    body nested 100,000 deep overflows Python's stack)."""
    depth = deepest = 0
    in_string = False
    for match in TOKENS.finditer(raw):
        token = match[0]
        if token[:1] == b"\\":
            continue
        if token == b'"':
            in_string = not in_string
        elif not in_string:
            depth += 1 if token in (b"[", b"{") else -1
            deepest = max(deepest, depth)
    return deepest


def parse_body(raw: bytes, spec: ServeSpec) -> ChatRequest:
    """The request body, checked against the limits, as a ChatRequest; or a 4xx ApiError."""
    check_body_size(len(raw), spec)
    brackets = raw.count(b"[") + raw.count(b"{")  # a bound on the depth, counted at memory speed
    if brackets > spec.max_json_depth and (depth := json_depth(raw)) > spec.max_json_depth:
        raise ApiError(400, f"the request body nests {depth} deep; the limit is {spec.max_json_depth}")
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ApiError(400, f"{where}: {first['msg']}", param=where) from None


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


def split_content(content: str | list[ContentPart] | None) -> tuple[str, list[str]]:
    """A message's text (its text parts joined) and its image URLs."""
    parts = [ContentPart(type="text", text=content)] if isinstance(content, str) else content or []
    if any(p.type == "image_url" and p.image_url is None for p in parts):
        raise ApiError(400, "an image_url part needs image_url.url", param="messages")
    text = "\n".join(p.text for p in parts if p.type == "text" and p.text).strip()
    return text, [p.image_url.url for p in parts if p.type == "image_url" and p.image_url is not None]


def read_conversation(messages: list[ChatMessage]) -> tuple[str | None, list[tuple[str, str]], str, list[str]]:
    """(system prompt, earlier (user, assistant) turns, the last user text, image URLs): leading system
    messages, then user and assistant turns alternating, ending with the user's."""
    system: list[str] = []
    for m in messages:
        if m.role != "system":
            break
        system.append(split_content(m.content)[0])
    turns = messages[len(system) :]
    if not turns or any(m.role != ("user", "assistant")[i % 2] for i, m in enumerate(turns)) or len(turns) % 2 == 0:
        raise ApiError(
            400,
            "messages: system messages first, then user and assistant turns alternating, ending with a user message",
            param="messages",
        )
    history, urls, user = [], [], ""
    for m in turns:
        text, images = split_content(m.content)
        if m.role == "assistant":
            if images:
                raise ApiError(400, "an assistant message cannot hold an image", param="messages")
            history.append((user, text))
        else:
            user = text
            urls += images
    return ("\n".join(system) if system else None), history, user, urls


def build_job(request: ChatRequest, spec: ServeSpec, maximum: int, minimum: int = 1) -> Job:
    """The request's conversation, image and sampling settings, checked; or an ApiError. The image
    may come in any user message; the prompt puts it in the first, where training puts it."""
    if request.n != 1:
        raise ApiError(400, f"n = {request.n}: this server returns one choice per request (n = 1)", param="n")
    system, history, question, urls = read_conversation(request.messages)
    if len(urls) > spec.max_images:
        raise ApiError(400, f"{len(urls)} images; this model takes at most {spec.max_images}", param="messages")
    if not question and not urls:
        raise ApiError(400, "the user message has no text and no image", param="messages")
    image = None
    if urls:
        url = urls[0]
        if url.startswith(("http://", "https://")):
            if not spec.allow_remote_images:
                raise ApiError(
                    400, "remote image URLs are disabled on this server; send a base64 data URL", param="messages"
                )
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
        raise ApiError(
            400, f"max_tokens {max_tokens} is above this server's limit {spec.max_tokens_limit}", param="max_tokens"
        )
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    return Job(
        question,
        image,
        max_tokens,
        request.temperature,
        stop,
        request.visual_tokens,
        tuple(history),
        system,
        request.top_p,
        request.seed,
    )


def context_error(prompt_tokens: int, max_tokens: int, context: int) -> ApiError | None:
    """A 400 naming the numbers when prompt (visual tokens included) + max_tokens exceed the context."""
    if prompt_tokens + max_tokens <= context:
        return None
    return ApiError(
        400,
        f"this model's context is {context} tokens; the request needs {prompt_tokens + max_tokens} "
        f"({prompt_tokens} in the prompt, visual tokens included, + max_tokens {max_tokens})",
        param="messages",
        code="context_length_exceeded",
    )


def completion_body(
    model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int, visual_tokens: int
) -> dict[str, Any]:
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


class ChunkWriter:
    """One streamed answer's server-sent events, as OpenAI's streaming API sends them: a role chunk,
    content deltas, a chunk with `finish_reason`, a usage chunk when asked, then `[DONE]`."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.id, self.created, self.model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model
        self.include_usage = include_usage

    def chunk(self, delta: dict, finish: str | None = None, **extra) -> bytes:
        return self.event([{"index": 0, "delta": delta, "finish_reason": finish}], **extra)

    def event(self, choices: list[dict], **extra) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        if self.include_usage:
            body.setdefault("usage", None)
        return f"data: {json.dumps(body)}\n\n".encode()

    def role(self) -> bytes:
        return self.chunk({"role": "assistant", "content": ""})

    def content(self, text: str) -> bytes:
        return self.chunk({"content": text})

    def end(self, finish: str, prompt_tokens: int, completion_tokens: int, visual_tokens: int) -> bytes:
        out = self.chunk({}, finish, visual_tokens=visual_tokens)
        if self.include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
            out += self.event([], usage=usage)
        return out + b"data: [DONE]\n\n"

    @staticmethod
    def error(error: ApiError) -> bytes:
        """An error after the stream began (headers sent): an error event, then `[DONE]`."""
        return f"data: {json.dumps(error.body())}\n\ndata: [DONE]\n\n".encode()
