"""Tokenizers: the one way every part of the platform loads a pretrained one, and those the platform
can make itself (no hub access needed)."""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from mqt_llava.config import Spec
from mqt_llava.model.constants import MODEL_TYPE
from mqt_llava.model.storage import pretrained_location

# </s> is deliberately not id 2: CLIP's text tower treats eos_token_id == 2 as a legacy config and
# pools at the highest token id instead of at </s>.
SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def byte_level_bpe(texts: Iterable[str] = (), vocab_size: int = 0) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer: 256 byte tokens + <pad> <unk> <s> </s>, plus merges learned from
    `texts` up to `vocab_size`. Any text encodes losslessly; with no texts there are no merges,
    which is what a randomly initialised LLM needs before a trained tokenizer exists."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """The untrained byte-level tokenizer (no merges)."""
    return byte_level_bpe()


def load_pretrained_tokenizer(location: str) -> PreTrainedTokenizerBase:
    """A pretrained tokenizer (a hub name or a directory), as training data, workers, the importer,
    evaluation and serving all load it.

    - Vicuna's hub repository ships a SentencePiece `tokenizer.model` and no `tokenizer.json`;
      transformers converts it to a fast tokenizer, which needs the `sentencepiece` package (a
      dependency of this project). Without it transformers' error talks of tiktoken; this one says
      what is missing.
    - Labels are masked through the fast tokenizer's character offsets
      (mqt_llava.data.conversation.tokenize), so a tokenizer without offsets is refused.
    - Llama's tokenizers have no pad token. LLaVA's training pads with `<unk>` (its v1 templates set
      `pad_token = unk_token`), and so does this one: padded positions are outside the attention mask
      and the loss, so the id that fills them never reaches the model. Exports save the choice.
    """
    # Imported here: AutoTokenizer imports torch (through transformers' configuration code), and the
    # processes that import this module only to name a tokenizer (Ray Data's decode actors and split
    # coordinator) should not pay for it. Those that load one do.
    from transformers import AutoTokenizer

    if is_export(location):
        # AutoTokenizer reads the export's config.json too; its model type must be registered (else
        # transformers warns that it instantiates a config of another type). Registering imports the
        # model class: a cost paid only where a tokenizer is loaded from an export.
        import mqt_llava.model.modeling  # noqa: F401

    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (ValueError, ImportError) as exc:
        if importlib.util.find_spec("sentencepiece") is None:
            raise ImportError(
                f"{location}: loading this tokenizer needs the sentencepiece package (a SentencePiece "
                f"tokenizer.model, as Llama and Vicuna ship, is converted with it): pip install sentencepiece ({exc})"
            ) from exc
        raise
    if not tokenizer.is_fast:
        raise ValueError(f"{location}: {type(tokenizer).__name__} is not a fast tokenizer (character offsets needed)")
    if tokenizer.pad_token is None:
        if tokenizer.unk_token is None:
            raise ValueError(f"{location}: the tokenizer has neither a pad nor an unk token to pad with")
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def is_export(location: str) -> bool:
    """Whether a local directory holds an MQT-LLaVA export (its config.json names the model type)."""
    config = Path(location) / "config.json"
    try:
        return config.is_file() and json.loads(config.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False


class TokenizerSpec(Spec):
    pretrained: str | None = None  # None: an untrained byte-level tokenizer (random-init LLMs)


def load_tokenizer(spec: TokenizerSpec) -> PreTrainedTokenizerBase:
    if spec.pretrained is None:
        return byte_level_tokenizer()
    return load_pretrained_tokenizer(pretrained_location(spec.pretrained))


@functools.lru_cache(maxsize=4)
def cached_tokenizer(spec: TokenizerSpec) -> PreTrainedTokenizerBase:
    """One tokenizer per spec and process: data tasks and actors call this for every batch."""
    return load_tokenizer(spec)
