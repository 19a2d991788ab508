"""Token schedules: which visual-token budgets m training draws from, one draw per optimizer step.

`draw(step)` is a pure function of (seed, step): every data-parallel rank computes the same m
without communicating, and a resumed run redraws exactly the m it would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from mqt_llava.model.budgets import check_budget

ScheduleKind = Literal["linear", "log", "fixed"]
SCHEDULE_KINDS: tuple[str, ...] = ("linear", "log", "fixed")


def schedule_support(
    kind: str, max_tokens: int, step: int = 2, tokens: int | None = None, min_tokens: int = 1
) -> tuple[int, ...]:
    """The budgets a schedule can draw, ascending; M is always included.

    linear: {s, 2s, ..., M} (the paper: s = 2, M = 256); log: {2, 4, 8, ..., M}; fixed: {tokens}, M
    by default (the paper's "independent models for each number of tokens" are fixed at their m).
    Budgets below the connector's smallest (`min_tokens`; 1 for the MQT) are not drawn: a connector
    of fixed size (LLaVA-1.5's MLP, min = M = N) trains at N whatever the schedule.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens (M) must be >= 1, got {max_tokens}")
    if kind == "linear":
        if not 1 <= step <= max_tokens:
            raise ValueError(f"linear schedule step must be in 1..{max_tokens}, got {step}")
        values = set(range(step, max_tokens + 1, step))
    elif kind == "log":
        values = {2**k for k in range(1, max_tokens.bit_length()) if 2**k <= max_tokens}
    elif kind == "fixed":
        if tokens is not None:
            return (check_budget(tokens, max_tokens, "fixed schedule tokens", min_tokens),)
        values = set()
    else:
        raise ValueError(f"schedule kind must be one of {SCHEDULE_KINDS}, got {kind!r}")
    values.add(max_tokens)
    return tuple(sorted(v for v in values if v >= min_tokens))


@dataclass(frozen=True)
class TokenSchedule:
    kind: ScheduleKind
    max_tokens: int
    step: int = 2
    seed: int = 0
    tokens: int | None = None  # fixed: the one budget (default M)
    min_tokens: int = 1  # the connector's smallest budget
    support: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        support = schedule_support(self.kind, self.max_tokens, self.step, self.tokens, self.min_tokens)
        object.__setattr__(self, "support", support)

    def draw(self, step: int) -> int:
        """The budget m for optimizer step `step`, uniform over the support."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, step]))
        return int(self.support[rng.integers(len(self.support))])
