"""MQT-LLaVA: train, ablate, evaluate and serve vision-language models with elastic visual-token
budgets. Importing the package registers the model with transformers, so an export loads with
`AutoConfig` / `AutoModelForImageTextToText.from_pretrained(path)`."""

from mqt_llava import model  # noqa: F401  (registers MQTLlavaConfig and the model with the Auto classes)
