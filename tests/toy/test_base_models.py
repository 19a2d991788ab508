import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

from mqt_llava.data.conversation import VICUNA_V1
from mqt_llava.data.images import ImageSettings, preprocess_image
from mqt_llava.model.tokenizer import byte_level_tokenizer
from mqt_llava.toy.base_models import normalise, retrieval_accuracy, train_clip, train_lm, train_tokenizer
from mqt_llava.toy.world import random_scene, record_rng, render_scene

SCENES = [random_scene(record_rng(0, "test", i), sizes=(40, 60)) for i in range(64)]
CAPTIONS = [s.describe() for s in SCENES]
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CAPTIONS * 2 + [VICUNA_V1.system], vocab_size=300)


SETTINGS = ImageSettings.square_of(32)


@pytest.fixture(scope="module")
def images():
    return torch.stack([torch.from_numpy(preprocess_image(render_scene(s), SETTINGS)) for s in SCENES])


def test_tokenizer_compresses_the_corpus_and_round_trips(tokenizer, tmp_path):
    assert tokenizer.eos_token_id != 2  # CLIP's text tower treats eos id 2 as a legacy config
    trained = len(tokenizer(CAPTIONS[0])["input_ids"])
    assert trained < 0.6 * len(byte_level_tokenizer()(CAPTIONS[0])["input_ids"])
    assert tokenizer.decode(tokenizer(CAPTIONS[1])["input_ids"]) == CAPTIONS[1]
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(CAPTIONS[2])["input_ids"] == tokenizer(CAPTIONS[2])["input_ids"]
    assert loaded.eos_token_id == tokenizer.eos_token_id and loaded.pad_token_id == tokenizer.pad_token_id


def test_clip_learns_to_match_images_and_captions_and_its_vision_tower_loads_alone(tokenizer, images, tmp_path):
    text = {**SMALL, "max_position_embeddings": 128}
    vision = {**SMALL, "image_size": 32, "patch_size": 8}
    clip, log = train_clip(images, CAPTIONS, tokenizer, vision, text, SETTINGS, steps=100, batch_size=32, log=print)
    assert log.last < 0.5 * log.first
    assert retrieval_accuracy(clip, images[:32], CAPTIONS[:32], tokenizer, SETTINGS) > 4 / 32  # chance: 1/32

    clip.save_pretrained(tmp_path)
    tower = CLIPVisionModel.from_pretrained(tmp_path).eval()  # how the model builder loads it
    pixels = normalise(images[:4], SETTINGS)
    with torch.no_grad():
        expected = clip.vision_model(pixels, output_hidden_states=True).hidden_states[-2]
        loaded = tower(pixels, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(loaded, expected)


def test_lm_learns_the_corpus_text_and_reloads(tokenizer, tmp_path):
    architecture = {**SMALL, "num_key_value_heads": 2, "max_position_embeddings": 256}
    lm, log = train_lm(CAPTIONS, tokenizer, architecture, steps=60, log=lambda _: None)
    assert log.last < 0.5 * log.first
    lm.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([tokenizer(CAPTIONS[0])["input_ids"]])
    torch.testing.assert_close(loaded(ids).logits, lm(ids).logits)
    assert loaded.config.eos_token_id == tokenizer.eos_token_id
