"""Which tier answers a request: by the OpenAI `model` field (one model id per tier), or, when the
request names `visual_tokens`, the tier whose budget is nearest (the request's m is still honoured
exactly; the nearest tier is where requests of that size batch best)."""

from __future__ import annotations

from mqt_llava.serve.api import ApiError


class Router:
    def __init__(self, budgets: dict[str, int]) -> None:
        self.budgets = dict(budgets)  # tier name -> its budget m

    @property
    def model_ids(self) -> list[str]:
        return list(self.budgets)

    def route(self, model: str, visual_tokens: int | None) -> str:
        if visual_tokens is not None:
            # the nearest budget; on a tie the larger tier, which loses no accuracy
            return min(self.budgets, key=lambda t: (abs(self.budgets[t] - visual_tokens), -self.budgets[t]))
        if model not in self.budgets:
            raise ApiError(
                404,
                f"the model `{model}` does not exist; available: {', '.join(self.budgets)}",
                param="model",
                code="model_not_found",
            )
        return model
