"""The numbers every room shares with the model, in a module that imports nothing: the data
pipeline's processes read them without loading torch or transformers' model code."""

MODEL_TYPE = "mqt_llava"  # config.json's model_type in an export
IGNORE_INDEX = -100  # a label the loss skips
IMAGE_TOKEN_INDEX = -200  # LLaVA's placeholder id: outside every vocabulary, so no tokenizer change
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
