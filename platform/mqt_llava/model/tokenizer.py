"""Tokenizers the platform can make itself (no hub access needed)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

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
