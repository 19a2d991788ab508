"""The model: the Matryoshka Query Transformer, the MQT-LLaVA `PreTrainedModel` and the token
schedules training draws budgets from.

The names below are imported when first used, so `mqt_llava.model.spec`, `.constants`,
`.image_settings`, `.storage` and `.tokenizer` import without torch (the data pipeline's processes
need no more). Importing `MQTLlavaConfig` or `MQTLlavaForConditionalGeneration` from here imports
`mqt_llava.model.modeling`, which registers both with transformers' Auto classes.
"""

import importlib
from typing import Any

_HOMES = {
    "MQTLlavaConfig": "mqt_llava.model.modeling",
    "MQTLlavaForConditionalGeneration": "mqt_llava.model.modeling",
    "MatryoshkaQueryTransformer": "mqt_llava.model.connectors.mqt",
    "TokenSchedule": "mqt_llava.model.schedules",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
