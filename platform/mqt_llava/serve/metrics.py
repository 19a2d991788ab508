"""The serving metrics, on Ray's Prometheus endpoint (every node's metrics export port, names prefixed
`ray_`): requests by tier and status, visual tokens per request, prompt and completion tokens, time to
first token, latency, and the budget `auto` routes to."""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

SECONDS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
TOKENS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 576, 1024]


class ServeMetrics:
    def __init__(self) -> None:
        self.requests = Counter(
            "mqt_requests", "Chat completion requests, by tier and HTTP status", tag_keys=("tier", "status")
        )
        self.visual_tokens = Histogram(
            "mqt_visual_tokens", "Visual tokens per answered request", boundaries=TOKENS, tag_keys=("tier",)
        )
        self.prompt_tokens = Counter("mqt_prompt_tokens", "Prompt tokens, visual tokens included", tag_keys=("tier",))
        self.completion_tokens = Counter("mqt_completion_tokens", "Generated tokens", tag_keys=("tier",))
        self.first_token = Histogram(
            "mqt_time_to_first_token_s",
            "Arrival to the first token (streamed) or the answer",
            boundaries=SECONDS,
            tag_keys=("tier",),
        )
        self.latency = Histogram(
            "mqt_latency_s", "Arrival to the last byte of the answer", boundaries=SECONDS, tag_keys=("tier", "stream")
        )
        self.auto_budget = Gauge("mqt_auto_budget", "The visual-token budget `auto` routes to now")

    def answered(
        self,
        tier: str,
        stream: bool,
        visual_tokens: int,
        prompt: int,
        completion: int,
        first_token_s: float,
        latency_s: float,
    ) -> None:
        tags = {"tier": tier}
        self.requests.inc(tags=tags | {"status": "200"})
        self.visual_tokens.observe(visual_tokens, tags=tags)
        self.prompt_tokens.inc(prompt, tags=tags)
        if completion:
            self.completion_tokens.inc(completion, tags=tags)
        self.first_token.observe(first_token_s, tags=tags)
        self.latency.observe(latency_s, tags=tags | {"stream": str(stream).lower()})

    def refused(self, tier: str | None, status: int) -> None:
        self.requests.inc(tags={"tier": tier or "none", "status": str(status)})
