import torch

from mqt_llava.config import ImageSpec
from mqt_llava.data.synthetic import random_scene, render_scene
from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.model.builder import build_model, save_export

REQUESTS = [
    Request("What is in the image?", render_scene(random_scene(1), 48, 30)),
    Request("Name a colour."),
    Request("Where is the circle?", render_scene(random_scene(2), 20, 40)),
]


def test_export_carries_the_aspect_mode(spec, tmp_path):
    built = build_model(spec.model_copy(update={"image": ImageSpec(aspect="square")}))
    save_export(built, tmp_path)
    assert InferenceEngine.from_export(tmp_path).aspect == "square"


def test_prepare_left_pads_and_keeps_images_uint8(built):
    engine = InferenceEngine.from_built(built)
    batch = engine.prepare(REQUESTS)
    assert batch.pixel_values.shape == (2, 3, 32, 32) and batch.pixel_values.dtype == torch.uint8
    assert (batch.attention_mask[:, -1] == 1).all()  # left padding: every prompt ends at the last column
    assert batch.attention_mask[1].sum() < batch.attention_mask[0].sum()


def test_batched_answers_equal_one_at_a_time(built):
    engine = InferenceEngine.from_built(built)
    together = engine.generate(REQUESTS, num_visual_tokens=3, max_new_tokens=8)
    assert together == [engine.generate([r], num_visual_tokens=3, max_new_tokens=8)[0] for r in REQUESTS]


def test_export_loads_without_the_builder_and_answers_identically(built, tmp_path):
    save_export(built, tmp_path)
    exported = InferenceEngine.from_export(tmp_path)
    assert exported.image_settings == built.image_settings
    assert exported.aspect == built.spec.image.aspect == "pad"
    original = InferenceEngine.from_built(built)
    for m in (1, 8):
        assert exported.generate(REQUESTS, m, 8) == original.generate(REQUESTS, m, 8)
        torch.testing.assert_close(exported.forward(REQUESTS, m), original.forward(REQUESTS, m))
