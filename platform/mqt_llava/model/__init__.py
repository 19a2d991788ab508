"""The model: the Matryoshka Query Transformer, the MQT-LLaVA `PreTrainedModel` (registered with
transformers' Auto classes on import) and the token schedules training draws budgets from."""

from mqt_llava.model.connectors.mqt import MatryoshkaQueryTransformer
from mqt_llava.model.modeling import MQTLlavaConfig, MQTLlavaForConditionalGeneration
from mqt_llava.model.schedules import TokenSchedule

__all__ = ["MQTLlavaConfig", "MQTLlavaForConditionalGeneration", "MatryoshkaQueryTransformer", "TokenSchedule"]
