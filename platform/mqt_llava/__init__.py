"""MQT-LLaVA: train, ablate, evaluate and serve vision-language models with elastic visual-token
budgets.

Importing the package imports nothing heavy: the data pipeline's Ray processes import parts of it
and must not pay for torch and transformers' model code. Importing the model class registers it with
transformers' Auto classes (as LLaVA's `llava.model` does), after which an export loads with
`AutoConfig` / `AutoModelForImageTextToText.from_pretrained(path)`:

    from mqt_llava.model import MQTLlavaForConditionalGeneration  # registers the Auto classes
"""
