"""`auto` routing: keep latency under a target by trading visual tokens for speed under load.

The router keeps a level: an index into the tiers ordered from the largest budget down. Every `auto`
request goes to the current level's tier, and its latency (arrival at the ingress to answer) updates
an exponentially weighted mean. When that mean exceeds the target, the level steps down one tier
(fewer tokens, faster answers); when it stays below `low_water` x target, the level steps back up.
After a step the router waits `cooldown_s` before the next, so the new tier's latency is what it
acts on (hysteresis both ways: no oscillation between two tiers at a steady load). Each ingress
replica decides for itself, from the requests it routes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pydantic import Field

from mqt_llava.config import Spec


class AutoSpec(Spec):
    enabled: bool = True
    target_latency_s: float = Field(2.0, gt=0)
    low_water: float = Field(0.5, gt=0, lt=1)  # step up when the mean latency is below this x target
    smoothing: float = Field(0.3, gt=0, le=1)  # weight of the newest latency in the mean
    cooldown_s: float = Field(2.0, ge=0)


@dataclass
class AutoRouter:
    budgets: dict[str, int]  # tier -> budget
    spec: AutoSpec
    clock: object = time.monotonic
    level: int = 0
    mean_latency_s: float | None = None
    last_step: float = field(default=-1e18)

    def __post_init__(self) -> None:
        self.order = sorted(self.budgets, key=lambda t: -self.budgets[t])  # largest budget first

    def choose(self) -> str:
        return self.order[self.level]

    def observe(self, tier: str, latency_s: float) -> None:
        now = self.clock()
        if tier != self.order[self.level]:
            return  # an answer from a tier this router has already left says nothing about the current one
        a = self.spec.smoothing
        self.mean_latency_s = (
            latency_s if self.mean_latency_s is None else a * latency_s + (1 - a) * self.mean_latency_s
        )
        if now - self.last_step < self.spec.cooldown_s:
            return
        if self.mean_latency_s > self.spec.target_latency_s and self.level < len(self.order) - 1:
            self.step(+1, now)
        elif self.mean_latency_s < self.spec.low_water * self.spec.target_latency_s and self.level > 0:
            self.step(-1, now)

    def step(self, direction: int, now: float) -> None:
        self.level += direction
        self.last_step = now
        self.mean_latency_s = None  # the new tier's latency is measured afresh
