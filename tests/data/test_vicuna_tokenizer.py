"""The 7B tokenizer as the hub ships it, through every path that loads it, and its stage-2 labels
checked against LLaVA's own masking logic.

`lmsys/vicuna-7b-v1.5` has a SentencePiece `tokenizer.model`, a `tokenizer_config.json`
(LlamaTokenizer, `legacy: false`, no pad token) and a `special_tokens_map.json`, and no
`tokenizer.json`. A tiny model of the same kind (BPE with byte fallback, digits split, Llama's
special ids) is trained here with `sentencepiece` and laid out the same way.

LLaVA's `preprocess_v1` masks by token counts: per round, the tokens of the round text and of its
instruction counted on their own, with a known off-by-one for non-legacy Llama tokenizers (its
"tokenization mismatch" warning, fixed by subtracting one per round after the first). The platform
masks through character offsets instead. The test re-derives LLaVA's labels from that logic
(written here from its description, not copied) and requires equal input ids and labels.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import sentencepiece as spm  # a dependency of the project: Vicuna's tokenizer.model is converted with it
import torch

from mqt_llava.data.conversation import IMAGE_PLACEHOLDER, VICUNA_V1, build_sample, render
from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.samples import tokenize_conversations
from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.model.builder import build_model
from mqt_llava.model.export import save_export
from mqt_llava.model.modeling import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from mqt_llava.model.tokenizer import TokenizerSpec, cached_tokenizer, load_pretrained_tokenizer, load_tokenizer
from small_model import small_spec

CORPUS = [
    VICUNA_V1.system,
    "USER: What color is the cube? ASSISTANT: The cube is red.",
    "Answer the question using a single word or phrase.",
    "Is there a red sphere in the image? Yes No. How many objects are there? 3 2 1",
    "Describe the picture. There are four objects: a small blue cube, a large green cylinder.",
]


def added(content: str) -> dict:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
    }


@pytest.fixture(scope="module")
def sentencepiece_model() -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=model,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def hub_layout(directory, model: bytes, legacy: bool):
    """The files of lmsys/vicuna-7b-v1.5's tokenizer, as its repository lays them out."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(model)
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": added("<s>"),
        "eos_token": added("</s>"),
        "unk_token": added("<unk>"),
        "clean_up_tokenization_spaces": False,
        "legacy": legacy,
        "model_max_length": 4096,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    specials = {"bos_token": added("<s>"), "eos_token": added("</s>"), "unk_token": added("<unk>")}
    (directory / "special_tokens_map.json").write_text(json.dumps(specials))
    return directory


@pytest.fixture(scope="module", params=[False, True], ids=["legacy-false", "legacy-true"])
def vicuna(request, tmp_path_factory, sentencepiece_model):
    return hub_layout(tmp_path_factory.mktemp("vicuna"), sentencepiece_model, legacy=request.param)


CONVERSATIONS = [
    ([{"from": "human", "value": "<image>\nWhat color is the cube?"}, {"from": "gpt", "value": "Red."}], True),
    (
        [
            {"from": "human", "value": "What color is the cube?\n<image>"},
            {"from": "gpt", "value": "The cube is red."},
            {"from": "human", "value": "How many objects are there? Answer the question using a single word."},
            {"from": "gpt", "value": "3"},
            {"from": "human", "value": "Is there a sphere?"},
            {"from": "gpt", "value": "No, there are four objects: a cube, a cylinder."},
        ],
        True,
    ),
    ([{"from": "human", "value": "Describe a cube."}, {"from": "gpt", "value": "A small blue cube."}], False),
    # Answers where the space after "ASSISTANT:" is a token of its own: a digit (Llama splits digits)
    # and a word outside the vocabulary.
    ([{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "3"}], True),
    ([{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Quokka."}], True),
]
CAPTIONS = ["A small blue cube.", "3 cubes and a quokka."]


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    """LLaVA's: each text chunk tokenized with its BOS, the image index between chunks, one BOS kept."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(IMAGE_PLACEHOLDER)]
    ids = [chunks[0][0]] if chunks[0] and chunks[0][0] == tokenizer.bos_token_id else []
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[1:] if chunk and chunk[0] == tokenizer.bos_token_id else chunk)
    return ids


def llava_preprocess_v1(prompt: str, tokenizer, legacy_fix: bool) -> tuple[list[int], list[int], bool]:
    """LLaVA's preprocess_v1 masking for one rendered vicuna_v1 conversation: (input ids, labels,
    whether its token counts agreed with the sequence, i.e. no "tokenization mismatch")."""
    ids = tokenizer_image_token(prompt, tokenizer)
    labels = list(ids)
    sep = VICUNA_V1.sep + VICUNA_V1.assistant + ": "
    cur = 1
    labels[:cur] = [IGNORE_INDEX] * cur
    for i, round_text in enumerate(prompt.split(VICUNA_V1.sep2)):
        if not round_text:
            break
        parts = round_text.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tokenizer_image_token(round_text, tokenizer))
        instruction_len = len(tokenizer_image_token(parts[0], tokenizer)) - 2
        if i and legacy_fix and not tokenizer.legacy:
            round_len, instruction_len = round_len - 1, instruction_len - 1
        labels[cur : cur + instruction_len] = [IGNORE_INDEX] * len(labels[cur : cur + instruction_len])
        cur += round_len
    labels[cur:] = [IGNORE_INDEX] * len(labels[cur:])
    return ids, labels, cur == len(ids)


def test_the_hub_layout_loads_through_every_path_that_loads_the_7b_tokenizer(vicuna, tmp_path):
    assert not (vicuna / "tokenizer.json").exists()
    spec = TokenizerSpec(pretrained=str(vicuna))
    tokenizers = {
        "load_pretrained_tokenizer": load_pretrained_tokenizer(str(vicuna)),
        "tokenizer.load_tokenizer (training workers, prepare_llava)": load_tokenizer(spec),
        "tokenizer.cached_tokenizer (Ray Data tasks)": cached_tokenizer(spec),
    }
    for where, tokenizer in tokenizers.items():
        assert tokenizer.is_fast, where
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (1, 2, 0), where
        assert tokenizer.pad_token == "<unk>" and tokenizer.pad_token_id == 0, where  # LLaVA pads with <unk>

    # The data pipeline's tokenization, the model built
    # around the tokenizer, its export and the engine that evaluation and serving load from it.
    conversations, has_image = CONVERSATIONS[0]
    rules = RecordRules(template="vicuna_v1", max_length=512, visual_tokens=8)
    batch = {
        "id": np.array(["a", "b"]),
        "image": np.array([b"png", None], dtype=object),
        "conversations": np.array([conversations, CONVERSATIONS[2][0]], dtype=object),
    }
    rows = tokenize_conversations(batch, spec, rules)
    assert list(rows["id"]) == ["a", "b"] and IMAGE_TOKEN_INDEX in rows["input_ids"][0]

    model = small_spec().model_copy(update={"tokenizer": spec})
    built = build_model(model)
    assert built.tokenizer.pad_token_id == 0 and built.model.language_model.config.vocab_size == len(built.tokenizer)
    save_export(built, tmp_path / "export")
    engine = InferenceEngine.from_export(tmp_path / "export")
    assert engine.tokenizer.pad_token_id == 0
    requests = [Request("What color is the cube?"), Request("Describe the picture in a few words.")]
    answers = engine.complete(requests, num_visual_tokens=2, max_new_tokens=3)  # two lengths: left-padded
    assert [a.completion_tokens >= 1 for a in answers] == [True, True]


def test_vicuna_v1_labels_equal_llavas_preprocess_v1(vicuna):
    tokenizer = load_pretrained_tokenizer(str(vicuna))
    for conversations, has_image in CONVERSATIONS:
        prompt = render(conversations, "vicuna_v1", has_image).text
        ours = build_sample(conversations, "vicuna_v1", tokenizer, has_image, max_length=4096, visual_tokens=1)
        ids, labels, agreed = llava_preprocess_v1(prompt, tokenizer, legacy_fix=True)
        assert agreed, "LLaVA's own logic (with its non-legacy fix) reports a tokenization mismatch"
        assert ours.input_ids == ids
        assert ours.labels == labels
        supervised = tokenizer.decode([t for t in ours.labels if t != IGNORE_INDEX])
        replies = [t["value"] for t in conversations if t["from"] == "gpt"]
        assert supervised.replace("</s>", "\n").split() == " \n ".join(replies).split()


def test_plain_labels_equal_llavas_preprocess_plain(vicuna):
    """Stage 1: the image, then the caption; LLaVA masks the tokens of "<image>" (BOS and the image)
    and trains everything after them, a leading "▁" of the caption included."""
    tokenizer = load_pretrained_tokenizer(str(vicuna))
    for caption in CAPTIONS:
        conversations = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": caption}]
        ours = build_sample(conversations, "plain", tokenizer, True, max_length=4096, visual_tokens=1)
        ids = tokenizer_image_token(IMAGE_PLACEHOLDER + caption + "\n", tokenizer)
        masked = len(tokenizer_image_token(IMAGE_PLACEHOLDER, tokenizer))
        assert ours.input_ids == ids
        assert ours.labels == [IGNORE_INDEX] * masked + ids[masked:]


def test_non_legacy_llama_is_llavas_tokenization_mismatch_case(sentencepiece_model, tmp_path):
    """Without its fix, LLaVA's arithmetic misses by one per later round with `legacy: false` (the
    setting Vicuna v1.5 ships) and it then ignores the whole sample; offsets have no such case."""
    tokenizer = load_pretrained_tokenizer(str(hub_layout(tmp_path / "v", sentencepiece_model, legacy=False)))
    conversations, has_image = CONVERSATIONS[1]
    prompt = render(conversations, "vicuna_v1", has_image).text
    _, _, agreed = llava_preprocess_v1(prompt, tokenizer, legacy_fix=False)
    assert not agreed
    ours = build_sample(conversations, "vicuna_v1", tokenizer, has_image, max_length=4096, visual_tokens=1)
    assert ours.labels == llava_preprocess_v1(prompt, tokenizer, legacy_fix=True)[1]
    assert torch.tensor([t != IGNORE_INDEX for t in ours.labels]).sum() > 0


def test_sentencepiece_is_a_declared_dependency():
    """Installed here is not enough: a fresh install (CI, the Dockerfile, a GPU node) takes what the
    project declares, and without it the hub's tokenizer.model does not load."""
    import re
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in project["dependencies"]}
    assert "sentencepiece" in names


def test_the_importer_takes_a_checkpoint_with_vicunas_tokenizer_files(vicuna, tmp_path):
    """The released MQT-LLaVA-7B carries Vicuna's tokenizer files beside its weights: a checkpoint in
    LLaVA's layout (random weights at toy size) with those files imports, and its export serves."""
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from mqt_llava.model.official import import_official

    width, llm_width, queries = 32, 48, 16
    tower = CLIPVisionModel(
        CLIPVisionConfig(
            image_size=32,
            patch_size=8,
            hidden_size=width,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
        )
    )
    tower.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path / "clip"
    )
    tokenizer = load_pretrained_tokenizer(str(vicuna))
    llm = dict(hidden_size=llm_width, intermediate_size=96, num_hidden_layers=1, num_attention_heads=2)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=2, **llm))
    shapes = {
        "query": (queries, width),
        "pos_embed": (queries, width),
        "attn.in_proj_weight": (3 * width, width),
        "attn.in_proj_bias": (3 * width,),
        "attn.out_proj.weight": (width, width),
        "attn.out_proj.bias": (width,),
        "proj": (width, llm_width),
    }
    shapes |= {f"ln_{x}.{p}": (width,) for x in "qkv" for p in ("weight", "bias")}
    abstractor = {f"model.query_abstractor.{k}": torch.randn(shape) for k, shape in shapes.items()}
    checkpoint = tmp_path / "mqt-llava-7b"
    checkpoint.mkdir()
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        (checkpoint / name).write_bytes((vicuna / name).read_bytes())
    config = llama.config.to_dict() | {
        "model_type": "llava_llama",
        "mm_vision_tower": str(tmp_path / "clip"),
        "mm_vision_select_layer": -2,
        "image_aspect_ratio": "pad",
    }
    (checkpoint / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in (llama.state_dict() | abstractor).items()}
    save_file(state, str(checkpoint / "model.safetensors"))

    export = import_official(checkpoint, tmp_path / "export", num_heads=2)
    engine = InferenceEngine.from_export(export)
    assert engine.tokenizer.is_fast and engine.tokenizer.pad_token == "<unk>"
    answers = engine.complete([Request("Is there a cube?"), Request("What color is the small cube?")], 4, 2)
    assert [a.completion_tokens >= 1 for a in answers] == [True, True]
