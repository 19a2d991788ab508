"""LLaVA's conversation templates, label masking and truncation.

Records are LLaVA's: `conversations` = [{"from": "human" | "gpt", "value": str}, ...], with one
`<image>` in a human turn when the record has an image.

- `plain` (stage 1): the human turn is replaced by the image alone; the text is
  "<image>" + caption + "\\n" and the caption with its "\\n" is supervised.
- `vicuna_v1` (stage 2): "{system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>";
  every assistant reply with its "</s>" (and the space before it) is supervised, everything else
  is ignored (-100).

Rendering produces text plus the character spans to supervise; tokenization maps those spans onto
tokens through the fast tokenizer's offsets, so masks are exact for any tokenizer instead of
depending on per-tokenizer length arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mqt_llava.model.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

IMAGE_PLACEHOLDER = "<image>"
# LLaVA-1.5's prompt conventions: what follows a question in training data and in every benchmark.
SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_SUFFIX = "Answer with the option's letter from the given choices directly."


class MalformedConversation(ValueError):
    """A record that cannot become a training sample; `reason` is a stable key for reject counts."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class SequenceTooLong(MalformedConversation):
    def __init__(self, message: str) -> None:
        super().__init__("sequence_too_long", message)


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    user: str
    assistant: str
    sep: str
    sep2: str


PLAIN = Template("plain", system="", user="", assistant="", sep="\n", sep2="")
VICUNA_V1 = Template(
    "vicuna_v1",
    system=(
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    ),
    user="USER",
    assistant="ASSISTANT",
    sep=" ",
    sep2="</s>",
)
TEMPLATES: dict[str, Template] = {t.name: t for t in (PLAIN, VICUNA_V1)}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(TEMPLATES)}") from None


@dataclass(frozen=True)
class RenderedConversation:
    text: str
    supervised: tuple[tuple[int, int], ...]  # [start, end) character spans trained on
    has_image: bool


@dataclass(frozen=True)
class TokenizedSample:
    input_ids: list[int]
    labels: list[int]

    @property
    def has_image(self) -> bool:
        return IMAGE_TOKEN_INDEX in self.input_ids


def normalize_turns(conversations: list[dict[str, Any]], has_image: bool) -> list[tuple[str, str]]:
    """Validate roles and text, and move `<image>` to the start of the first human turn (+ "\\n"),
    as LLaVA's preprocess_multimodal does. Returns [(role, text)] starting with a human turn."""
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(conversations):
        role, value = turn.get("from"), turn.get("value")
        if role not in ("human", "gpt"):
            raise MalformedConversation("bad_role", f"turn {i} has role {role!r}, expected human or gpt")
        if not isinstance(value, str):
            raise MalformedConversation("empty_text", f"turn {i} has no text")
        turns.append((role, value))
    # LLaVA drops a leading assistant turn so the conversation starts with the user.
    if turns and turns[0][0] != "human":
        turns = turns[1:]
    for i, (role, _) in enumerate(turns):
        if role != ("human", "gpt")[i % 2]:
            raise MalformedConversation("bad_role", "turns must alternate human, gpt, human, ...")
    if not any(role == "gpt" for role, _ in turns):
        raise MalformedConversation("no_assistant_turn", "the conversation has no assistant reply")

    placeholders = sum(text.count(IMAGE_PLACEHOLDER) for _, text in turns)
    if has_image and placeholders != 1:
        raise MalformedConversation(
            "image_placeholder_mismatch",
            f"an image record needs exactly one {IMAGE_PLACEHOLDER}, found {placeholders}",
        )
    if not has_image and placeholders:
        raise MalformedConversation("image_placeholder_mismatch", f"a text-only record contains {IMAGE_PLACEHOLDER}")
    if any(IMAGE_PLACEHOLDER in text for role, text in turns if role == "gpt"):
        raise MalformedConversation("image_placeholder_mismatch", f"{IMAGE_PLACEHOLDER} in an assistant turn")

    # A turn holding only the image is valid (LLaVA renders it as "<image>"); other turns need text.
    if any(not text.replace(IMAGE_PLACEHOLDER, "").strip() and IMAGE_PLACEHOLDER not in text for _, text in turns):
        raise MalformedConversation("empty_text", "a turn has empty text")
    turns = [(role, text.replace(IMAGE_PLACEHOLDER, "").strip()) for role, text in turns]
    if has_image:
        turns[0] = (turns[0][0], f"{IMAGE_PLACEHOLDER}\n{turns[0][1]}".strip())
    return turns


def render(conversations: list[dict[str, Any]], template: str | Template, has_image: bool) -> RenderedConversation:
    template = get_template(template) if isinstance(template, str) else template
    if template is PLAIN:
        return _render_plain(conversations, has_image)
    turns = normalize_turns(conversations, has_image)
    text = template.system + template.sep
    supervised = []
    for role, value in turns:
        if role == "human":
            text += f"{template.user}: {value}{template.sep}"
        else:
            # The span starts at the space after "ASSISTANT:", as LLaVA's masking does: where that
            # space is a token of its own (Llama before a digit, or a word outside the vocabulary:
            # "▁" "3"), LLaVA trains it, and a model that never learned to say it could not start
            # such an answer; where it merges with the answer's first token, nothing changes.
            text += f"{template.assistant}:"
            start = len(text)
            text += f" {value}{template.sep2}"
            supervised.append((start, len(text)))
    return RenderedConversation(text, tuple(supervised), has_image)


def generation_prompt(
    question: str,
    template: str | Template,
    has_image: bool,
    history: Sequence[tuple[str, str]] = (),
    system: str | None = None,
) -> str:
    """A prompt ending where the assistant's reply starts, as LLaVA's get_prompt renders a conversation
    whose last message is empty ("... ASSISTANT:"). `history` holds earlier (user, assistant) turns;
    the image goes at the start of the first user turn, where training puts it (normalize_turns).
    `system` replaces the template's system prompt."""
    template = get_template(template) if isinstance(template, str) else template
    if template is PLAIN:
        raise ValueError("the plain template has no prompt to answer; use vicuna_v1")
    users = [user.replace(IMAGE_PLACEHOLDER, "").strip() for user, _ in history]
    users.append(question.replace(IMAGE_PLACEHOLDER, "").strip())
    if has_image:
        users[0] = f"{IMAGE_PLACEHOLDER}\n{users[0]}".strip()
    text = (template.system if system is None else system) + template.sep
    for user, (_, assistant) in zip(users, history, strict=False):
        text += f"{template.user}: {user}{template.sep}{template.assistant}: {assistant.strip()}{template.sep2}"
    return f"{text}{template.user}: {users[-1]}{template.sep}{template.assistant}:"


def _render_plain(conversations: list[dict[str, Any]], has_image: bool) -> RenderedConversation:
    # LLaVA's preprocess_plain: exactly (instruction, caption); the instruction becomes the image.
    if not has_image:
        raise MalformedConversation("image_placeholder_mismatch", "the plain template needs an image")
    turns = normalize_turns(conversations, has_image)
    if len(turns) != 2:
        raise MalformedConversation(
            "bad_role", f"the plain template takes one human and one gpt turn, got {len(turns)}"
        )
    caption = turns[1][1]
    text = IMAGE_PLACEHOLDER + caption + PLAIN.sep
    return RenderedConversation(text, ((len(IMAGE_PLACEHOLDER), len(text)),), has_image)


def tokenize_prompt(prompt: str, tokenizer, add_bos: bool = True) -> list[int]:
    """Token ids of a generation prompt, with IMAGE_TOKEN_INDEX for its `<image>`."""
    return tokenize(RenderedConversation(prompt, (), IMAGE_PLACEHOLDER in prompt), tokenizer, add_bos).input_ids


def tokenize(rendered: RenderedConversation, tokenizer, add_bos: bool = True) -> TokenizedSample:
    """Token ids with one IMAGE_TOKEN_INDEX where `<image>` was, and labels: the token id where the
    token's last character lies in a supervised span, else -100. A token of no characters (Llama's
    prefix "▁" at the start of a chunk) is trained when the character it precedes is.

    Like LLaVA's tokenizer_image_token, text before and after the placeholder is tokenized apart.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    if add_bos and tokenizer.bos_token_id is not None:
        input_ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    trained_chars = bytearray(len(rendered.text))
    for start, stop in rendered.supervised:
        trained_chars[start:stop] = b"\x01" * (stop - start)
    chunks = rendered.text.split(IMAGE_PLACEHOLDER)
    offset = 0
    for i, chunk in enumerate(chunks):
        if i:
            input_ids.append(IMAGE_TOKEN_INDEX)
            labels.append(IGNORE_INDEX)
            offset += len(IMAGE_PLACEHOLDER)
        if chunk:
            enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
            for token_id, (begin, end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
                input_ids.append(token_id)
                last = offset + end - 1 if end > begin else offset + begin
                trained = last < offset + len(chunk) and trained_chars[last]
                labels.append(token_id if trained else IGNORE_INDEX)
        offset += len(chunk)
    return TokenizedSample(input_ids, labels)


def truncate(sample: TokenizedSample, max_length: int, visual_tokens: int) -> TokenizedSample:
    """Cut the text end so that the sequence, with its placeholder expanded to `visual_tokens`
    tokens, fits `max_length`. Never cuts the placeholder; labels stay aligned (same cut).

    Raises SequenceTooLong when the image itself would not fit or no supervised token is left.
    """
    extra = visual_tokens - 1 if sample.has_image else 0
    if len(sample.input_ids) + extra <= max_length:
        return sample
    keep = max_length - extra
    if sample.has_image and sample.input_ids.index(IMAGE_TOKEN_INDEX) >= keep:
        raise SequenceTooLong(f"the image ({visual_tokens} tokens) does not fit in max_length={max_length}")
    cut = TokenizedSample(sample.input_ids[:keep], sample.labels[:keep])
    if all(label == IGNORE_INDEX for label in cut.labels):
        raise SequenceTooLong(f"no supervised token left within max_length={max_length}")
    return cut


def build_sample(
    conversations: list[dict[str, Any]],
    template: str,
    tokenizer,
    has_image: bool,
    max_length: int,
    visual_tokens: int,
) -> TokenizedSample:
    """Render, tokenize and truncate one LLaVA record."""
    rendered = render(conversations, template, has_image)
    return truncate(tokenize(rendered, tokenizer), max_length, visual_tokens)
