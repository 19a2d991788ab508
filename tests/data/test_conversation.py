import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mqt_llava.data.conversation import (
    VICUNA_V1,
    MalformedConversation,
    SequenceTooLong,
    build_sample,
    generation_prompt,
    render,
    tokenize,
    truncate,
)
from mqt_llava.model.modeling import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from mqt_llava.model.tokenizer import SPECIAL_TOKENS, byte_level_tokenizer

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
MULTI_TURN = [
    {"from": "human", "value": "<image>\nWhat colour is the circle?"},
    {"from": "gpt", "value": "Red."},
    {"from": "human", "value": "How many squares are there?"},
    {"from": "gpt", "value": "There are two squares."},
]
TEXT_ONLY = [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Blue."}]
IMAGE_AFTER_TEXT = [
    {"from": "human", "value": "Describe this picture.\n<image>"},
    {"from": "gpt", "value": "Three shapes on a grid."},
]
CORPUS = [SYSTEM, "What colour is the circle? Red. How many squares are there? There are two squares."] * 20


def trained_bpe(pre_tokenizer, decoder) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizer, decoder
    alphabet = pre_tokenizers.ByteLevel.alphabet() if isinstance(pre_tokenizer, pre_tokenizers.ByteLevel) else []
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(
        CORPUS + ["<image> \n ' , . ? : ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz"], trainer
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


TOKENIZERS = {
    "byte_level_untrained": byte_level_tokenizer,
    "byte_level_bpe": lambda: trained_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()),
    "metaspace_bpe": lambda: trained_bpe(pre_tokenizers.Metaspace(), decoders.Metaspace()),  # Llama/SentencePiece style
}


@pytest.fixture(params=sorted(TOKENIZERS))
def tokenizer(request):
    return TOKENIZERS[request.param]()


def supervised_runs(sample, tokenizer):
    """The decoded text of each contiguous run of supervised tokens."""
    runs, current = [], []
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token  # labels are aligned with inputs (the model shifts them)
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run).strip() for run in runs]


def test_vicuna_v1_multi_turn_prompt_matches_llava():
    rendered = render(MULTI_TURN, "vicuna_v1", has_image=True)
    assert rendered.text == (
        f"{SYSTEM} USER: <image>\nWhat colour is the circle? ASSISTANT: Red.</s>"
        "USER: How many squares are there? ASSISTANT: There are two squares.</s>"
    )
    # From the space after "ASSISTANT:", as LLaVA's masking counts (test_vicuna_tokenizer.py)
    assert [rendered.text[a:b] for a, b in rendered.supervised] == [" Red.</s>", " There are two squares.</s>"]


def test_text_only_prompt_has_no_image():
    rendered = render(TEXT_ONLY, "vicuna_v1", has_image=False)
    assert rendered.text == f"{SYSTEM} USER: Name a colour. ASSISTANT: Blue.</s>"


def test_image_after_text_moves_to_the_start_of_the_first_human_turn():
    rendered = render(IMAGE_AFTER_TEXT, "vicuna_v1", has_image=True)
    assert rendered.text == f"{SYSTEM} USER: <image>\nDescribe this picture. ASSISTANT: Three shapes on a grid.</s>"


def test_plain_template_is_image_then_caption_then_newline():
    rendered = render(IMAGE_AFTER_TEXT, "plain", has_image=True)
    assert rendered.text == "<image>Three shapes on a grid.\n"
    assert [rendered.text[a:b] for a, b in rendered.supervised] == ["Three shapes on a grid.\n"]


def test_leading_assistant_turn_is_dropped_as_llava_does():
    rendered = render([{"from": "gpt", "value": "Hi."}, *TEXT_ONLY], "vicuna_v1", has_image=False)
    assert rendered.text == f"{SYSTEM} USER: Name a colour. ASSISTANT: Blue.</s>"


def test_turn_with_only_the_image_is_valid():
    conv = [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A red circle."}]
    assert render(conv, "vicuna_v1", has_image=True).text == f"{SYSTEM} USER: <image> ASSISTANT: A red circle.</s>"


@pytest.mark.parametrize(
    ("conversation", "has_image", "reason"),
    [
        ([{"from": "human", "value": "<image>\nHi"}], True, "no_assistant_turn"),
        ([{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "  "}], False, "empty_text"),
        (TEXT_ONLY, True, "image_placeholder_mismatch"),
        (MULTI_TURN, False, "image_placeholder_mismatch"),
        (
            [{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "x"}],
            True,
            "image_placeholder_mismatch",
        ),
        ([{"from": "human", "value": "Hi"}, {"from": "robot", "value": "x"}], False, "bad_role"),
        ([{"from": "human", "value": "Hi"}, {"from": "human", "value": "x"}], False, "bad_role"),
    ],
)
def test_malformed_conversations_name_their_reason(conversation, has_image, reason):
    with pytest.raises(MalformedConversation) as info:
        render(conversation, "vicuna_v1", has_image)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("conversation", "has_image"), [(MULTI_TURN, True), (TEXT_ONLY, False), (IMAGE_AFTER_TEXT, True)]
)
def test_only_assistant_replies_and_their_eos_are_supervised(tokenizer, conversation, has_image):
    sample = tokenize(render(conversation, "vicuna_v1", has_image), tokenizer)
    replies = [turn["value"] + "</s>" for turn in conversation if turn["from"] == "gpt"]
    assert supervised_runs(sample, tokenizer) == replies
    assert sample.input_ids[0] == tokenizer.bos_token_id and sample.labels[0] == IGNORE_INDEX
    assert sample.input_ids.count(IMAGE_TOKEN_INDEX) == int(has_image)
    eos_positions = [i for i, t in enumerate(sample.input_ids) if t == tokenizer.eos_token_id]
    assert len(eos_positions) == len(replies)
    assert all(sample.labels[i] == tokenizer.eos_token_id for i in eos_positions)
    # everything that is not supervised decodes back to the prompt around the replies
    unsupervised = [
        t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label == IGNORE_INDEX and t >= 0
    ]
    assert tokenizer.decode(unsupervised, skip_special_tokens=True).replace(" ", "").startswith(SYSTEM.replace(" ", ""))


def test_plain_supervises_caption_and_newline_only(tokenizer):
    sample = tokenize(render(IMAGE_AFTER_TEXT, "plain", True), tokenizer)
    assert sample.input_ids[:2] == [tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]
    assert sample.labels[:2] == [IGNORE_INDEX, IGNORE_INDEX]
    assert all(label != IGNORE_INDEX for label in sample.labels[2:])
    assert tokenizer.decode(sample.input_ids[2:]) == "Three shapes on a grid.\n"


def test_truncation_keeps_the_image_and_aligned_labels():
    tokenizer = byte_level_tokenizer()
    full = tokenize(render(MULTI_TURN, "vicuna_v1", True), tokenizer)
    cut = truncate(full, max_length=len(full.input_ids) - 10 + 4, visual_tokens=5)
    assert len(cut.input_ids) + 4 == len(full.input_ids) - 10 + 4  # fits once the image takes 5 positions
    assert cut.input_ids == full.input_ids[: len(cut.input_ids)]
    assert cut.labels == full.labels[: len(cut.labels)]
    assert IMAGE_TOKEN_INDEX in cut.input_ids
    assert truncate(full, max_length=len(full.input_ids) + 4, visual_tokens=5) == full


def test_truncation_refuses_to_cut_the_image_or_every_label():
    tokenizer = byte_level_tokenizer()
    full = tokenize(render(MULTI_TURN, "vicuna_v1", True), tokenizer)
    image_at = full.input_ids.index(IMAGE_TOKEN_INDEX)
    with pytest.raises(SequenceTooLong, match="image"):
        truncate(full, max_length=image_at + 63, visual_tokens=64)  # one position short of the image
    with pytest.raises(SequenceTooLong, match="no supervised"):
        truncate(full, max_length=image_at + 64, visual_tokens=64)  # the image fits, no reply does
    first_label = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)
    with pytest.raises(SequenceTooLong, match="no supervised"):
        truncate(full, max_length=first_label + 3, visual_tokens=4)


def test_build_sample_renders_tokenizes_and_truncates():
    tokenizer = byte_level_tokenizer()
    sample = build_sample(MULTI_TURN, "vicuna_v1", tokenizer, True, max_length=10_000, visual_tokens=64)
    assert sample == tokenize(render(MULTI_TURN, VICUNA_V1, True), tokenizer)


def test_a_multi_turn_prompt_is_the_training_rendering_up_to_the_reply():
    conversation = [
        {"from": "human", "value": "What colour is the circle?\n<image>"},
        {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "And the square?"},
        {"from": "gpt", "value": "Blue."},
    ]
    rendered = render(conversation, "vicuna_v1", has_image=True)
    reply_starts = rendered.supervised[-1][0]
    prompt = generation_prompt("And the square?", "vicuna_v1", True, history=[("What colour is the circle?", "Red.")])
    assert prompt == rendered.text[:reply_starts]  # "... ASSISTANT:": the supervised reply starts with its space
    assert prompt.count("<image>") == 1 and prompt.index("<image>") < prompt.index("What colour")


def test_a_system_message_replaces_the_template_system_prompt():
    prompt = generation_prompt("Hi", "vicuna_v1", False, system="Answer in French.")
    assert prompt == "Answer in French. USER: Hi ASSISTANT:"
