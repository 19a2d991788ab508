"""A small client for the serving API, for scripts that should not need the `openai` package (the
quickstart, smoke checks). Requests are plain OpenAI chat completions plus this server's
`visual_tokens`; any OpenAI client works the same way (the serving tests use the official one).
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

import requests


def image_data_url(path: str | Path) -> str:
    """A local image as the base64 data URL the API takes in an `image_url` part."""
    path = Path(path)
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def user_content(text: str, image: str | Path | None = None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if image is not None:
        parts.append({"type": "image_url", "image_url": {"url": image_data_url(image)}})
    return parts


class ServeClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = timeout_s

    def models(self) -> list[str]:
        response = requests.get(f"{self.base_url}/v1/models", headers=self.headers, timeout=self.timeout_s)
        response.raise_for_status()
        return [m["id"] for m in response.json()["data"]]

    def chat(self, model: str, text: str, image: str | Path | None = None, **fields) -> requests.Response:
        """POST one single-turn chat completion; the response is returned as is (errors included,
        with OpenAI's error body), so callers can look at refusals too."""
        body = {"model": model, "messages": [{"role": "user", "content": user_content(text, image)}], **fields}
        return requests.post(
            f"{self.base_url}/v1/chat/completions", json=body, headers=self.headers, timeout=self.timeout_s
        )
