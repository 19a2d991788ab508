"""A judge model behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, a local
server), for the benchmarks scored by a model."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import requests


class JudgeError(RuntimeError):
    pass


@dataclass
class Judge:
    url: str  # the API base, e.g. https://api.openai.com/v1
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    retries: int = 3

    @classmethod
    def from_options(cls, url: str | None, model: str | None, key_env: str = "OPENAI_API_KEY") -> Judge | None:
        """A judge when a URL and a model are given, else None (judged benchmarks are skipped)."""
        if not url or not model:
            return None
        return cls(url.rstrip("/"), model, os.environ.get(key_env))

    def complete(self, instruction: str, content: str) -> str:
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": instruction}, {"role": "user", "content": content}],
            "temperature": 0.0,
            "max_tokens": 512,
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        error = None
        for attempt in range(self.retries):
            try:
                response = requests.post(
                    f"{self.url}/chat/completions", json=body, headers=headers, timeout=self.timeout_s
                )
                if response.status_code == 200:
                    return response.json()["choices"][0]["message"]["content"]
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500 and response.status_code != 429:
                    break  # a bad request or a bad key does not get better by retrying
            except (requests.RequestException, KeyError, IndexError, ValueError) as exc:
                error = repr(exc)
            time.sleep(min(2**attempt, 10))
        raise JudgeError(f"judge {self.model} at {self.url}: {error}")
