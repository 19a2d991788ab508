"""`auto` routing: keep a latency percentile under a target by trading visual tokens for speed.

The router keeps a level: an index into the tiers ordered from the largest budget down. Every `auto`
request goes to the current level's tier, and its latency (arrival at the ingress to answer) joins a
sliding window (`window_s`). Once the window holds `min_samples` answers from the current tier, its
`quantile` (p95 by default, p99 with 0.99) is compared with the target: above it, the level steps down
one tier (fewer tokens, faster answers); below `low_water` x target, it steps back up. After a step the
window starts afresh and the router waits `cooldown_s`, so it acts on the new tier's latency only
(hysteresis both ways: no oscillation between two tiers at a steady load). Each ingress replica decides
for itself, from the requests it routes; its last decisions are kept for `GET /v1/auto`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from pydantic import Field

from mqt_llava.config import Spec


class AutoSpec(Spec):
    enabled: bool = True
    target_latency_s: float = Field(2.0, gt=0)
    quantile: float = Field(0.95, gt=0, lt=1)  # the latency percentile held under the target
    window_s: float = Field(10.0, gt=0)  # the sliding window the percentile is taken over
    min_samples: int = Field(10, ge=1)  # answers the window needs before the router acts
    low_water: float = Field(0.5, gt=0, lt=1)  # step up when the percentile is below this x target
    cooldown_s: float = Field(2.0, ge=0)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class AutoRouter:
    budgets: dict[str, int]  # tier -> budget
    spec: AutoSpec
    clock: object = time.monotonic
    level: int = 0
    last_step: float = field(default=-1e18)

    def __post_init__(self) -> None:
        self.order = sorted(self.budgets, key=lambda t: -self.budgets[t])  # largest budget first
        self.window: deque[tuple[float, float]] = deque()  # (when, latency) of the current tier's answers
        self.decisions: deque[dict] = deque(maxlen=50)

    def choose(self) -> str:
        return self.order[self.level]

    def latency(self, now: float) -> float | None:
        """The window's percentile, or None while it holds fewer than min_samples answers."""
        while self.window and self.window[0][0] < now - self.spec.window_s:
            self.window.popleft()
        if len(self.window) < self.spec.min_samples:
            return None
        return percentile([latency for _, latency in self.window], self.spec.quantile)

    def observe(self, tier: str, latency_s: float) -> None:
        now = self.clock()
        if tier != self.order[self.level]:
            return  # an answer from a tier this router has already left says nothing about the current one
        self.window.append((now, latency_s))
        observed = self.latency(now)
        if observed is None or now - self.last_step < self.spec.cooldown_s:
            return
        if observed > self.spec.target_latency_s and self.level < len(self.order) - 1:
            self.step(+1, now, observed)
        elif observed < self.spec.low_water * self.spec.target_latency_s and self.level > 0:
            self.step(-1, now, observed)

    def step(self, direction: int, now: float, observed: float) -> None:
        before = self.order[self.level]
        self.level += direction
        self.last_step = now
        self.window.clear()  # the new tier's latency is measured afresh
        self.decisions.append(
            {
                "at": now,
                "from": before,
                "to": self.order[self.level],
                f"p{round(self.spec.quantile * 100)}_s": round(observed, 4),
            }
        )

    def state(self) -> dict:
        now = self.clock()
        return {
            "tier": self.choose(),
            "budget": self.budgets[self.choose()],
            "target_latency_s": self.spec.target_latency_s,
            "quantile": self.spec.quantile,
            "window_s": self.spec.window_s,
            "latency_s": self.latency(now),
            "samples": len(self.window),
            "decisions": [d | {"seconds_ago": round(now - d["at"], 3)} for d in self.decisions],
        }
