"""Visual-token budgets m: the one place that parses "2,8,M", gives the default sweep and checks
that m is one the model gives, with one error message wherever a budget comes from (a config, a
command line, an HTTP request, a model call).

A model gives budgets `minimum..M`: an MQT any m in 1..M; a connector of fixed size (LLaVA-1.5's MLP)
only its N grid tokens, so minimum = M = N. Every function takes `minimum` (default 1).
"""

from __future__ import annotations

from collections.abc import Iterable

PAPER_BUDGETS: tuple[int, ...] = (2, 4, 8, 16, 36, 64, 144, 256)  # the paper's Table 1 and Fig. 2 budgets


class BudgetError(ValueError):
    pass


def out_of_range(what: str, bad: Iterable, maximum: int, minimum: int = 1) -> BudgetError:
    given = ", ".join(map(str, bad))
    if minimum == 1:
        return BudgetError(f"{what}: {given} outside 1..{maximum} (the model's M)")
    if minimum == maximum:
        return BudgetError(f"{what}: {given} is not {maximum} (the model's connector gives exactly {maximum} tokens)")
    return BudgetError(f"{what}: {given} outside {minimum}..{maximum} (the model's budgets)")


def check_budget(m: int, maximum: int, what: str = "visual_tokens", minimum: int = 1) -> int:
    """m itself when it is an int in minimum..M; else a BudgetError (TypeError for a non-int)."""
    if isinstance(m, bool) or not isinstance(m, int):
        raise TypeError(f"{what} must be an int, got {type(m).__name__}")
    if not minimum <= m <= maximum:
        raise out_of_range(what, [m], maximum, minimum)
    return m


def parse_budgets(spec: str | Iterable[int | str], maximum: int, what: str = "budgets", minimum: int = 1) -> list[int]:
    """ "2,8,M" (or [2, 8, "M"]) -> [2, 8, M]: sorted, without repeats, each in minimum..M."""
    items = [x for x in spec.split(",") if x.strip()] if isinstance(spec, str) else list(spec)
    if not items:
        raise BudgetError(f"{what}: no budgets given")
    values, bad = set(), []
    for item in items:
        if isinstance(item, str) and item.strip() == "M":
            values.add(maximum)
            continue
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise BudgetError(f"{what}: expected integers or M, got {spec!r}")
        try:
            m = int(item)
        except ValueError:
            raise BudgetError(f"{what}: expected integers or M, got {spec!r}") from None
        if minimum <= m <= maximum:
            values.add(m)
        else:
            bad.append(m)
    if bad:
        raise out_of_range(what, bad, maximum, minimum)
    return sorted(values)


def parse_budget(value: int | str, maximum: int, what: str = "visual_tokens", minimum: int = 1) -> int:
    """One budget: an int in minimum..M, or "M"."""
    return parse_budgets([value], maximum, what, minimum)[0]


def default_budgets(maximum: int, candidates: Iterable[int] = PAPER_BUDGETS, minimum: int = 1) -> list[int]:
    """The candidates in minimum..M, then M: the paper's sweep cut to a model's budgets."""
    return sorted({b for b in candidates if minimum <= b < maximum} | {maximum})
