import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from mqt_llava.config import load_config, preset_path
from mqt_llava.data.conversation import build_sample
from mqt_llava.model.builder import build_model
from mqt_llava.model.modeling import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    MQTLlavaConfig,
    MQTLlavaForConditionalGeneration,
)
from mqt_llava.model.spec import ModelSpec
from mqt_llava.model.stages import configure_trainable, parameter_report

QUESTION = [{"from": "human", "value": "<image>\nWhat shape is red?"}, {"from": "gpt", "value": "A circle."}]
CHAT = [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "Hello there."}]


def batch(built, records, padding_side="right"):
    """Tokenize LLaVA records and pad them into a batch, one image per image record."""
    samples = [build_sample(conv, "vicuna_v1", built.tokenizer, has_image, 512, 8) for conv, has_image in records]
    length = max(len(s.input_ids) for s in samples)
    pad = built.tokenizer.pad_token_id
    ids = torch.full((len(samples), length), pad)
    labels = torch.full((len(samples), length), IGNORE_INDEX)
    mask = torch.zeros(len(samples), length, dtype=torch.long)
    for i, s in enumerate(samples):
        span = slice(length - len(s.input_ids), length) if padding_side == "left" else slice(0, len(s.input_ids))
        ids[i, span], labels[i, span], mask[i, span] = torch.tensor(s.input_ids), torch.tensor(s.labels), 1
    gen = torch.Generator().manual_seed(0)
    n_images = sum(has_image for _, has_image in records)
    pixels = torch.randint(0, 256, (n_images, 3, 32, 32), dtype=torch.uint8, generator=gen) if n_images else None
    return ids, mask, labels, pixels


def test_placeholder_becomes_exactly_m_ignored_positions(built):
    ids, mask, labels, pixels = batch(built, [(QUESTION, True), (CHAT, False)])
    for m in (1, 3, 8):
        merged = built.model.merge_visual_tokens(ids, mask, pixels, labels, m, "right")
        lengths = merged.attention_mask.sum(1)
        assert lengths[0] == mask[0].sum() - 1 + m  # image sample grew by m - 1
        assert lengths[1] == mask[1].sum()  # text-only sample unchanged
        p = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
        visual = built.model.encode_images(pixels, m)[0]
        torch.testing.assert_close(merged.inputs_embeds[0, p : p + m], visual)
        assert (merged.labels[0, p : p + m] == IGNORE_INDEX).all()
        # text labels stay aligned with their tokens after the shift
        supervised = labels[0][labels[0] != IGNORE_INDEX]
        assert torch.equal(merged.labels[0][merged.labels[0] != IGNORE_INDEX], supervised)


def test_mixed_batch_forward_gives_a_loss_and_per_m_lengths(built):
    ids, mask, labels, pixels = batch(built, [(QUESTION, True), (CHAT, False), (QUESTION, True)])
    out4 = built.model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels, num_visual_tokens=4)
    out8 = built.model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels, num_visual_tokens=8)
    assert out8.logits.shape[1] - out4.logits.shape[1] == 4
    assert torch.isfinite(out4.loss) and out4.loss > 0


def test_text_only_sample_is_unaffected_by_the_image_next_to_it(built):
    ids, mask, labels, pixels = batch(built, [(QUESTION, True), (CHAT, False)])
    alone = batch(built, [(CHAT, False)])
    mixed = built.model(input_ids=ids, attention_mask=mask, pixel_values=pixels, num_visual_tokens=8).logits[1]
    single = built.model(input_ids=alone[0], attention_mask=alone[1]).logits[0]
    torch.testing.assert_close(mixed[: single.shape[0]], single, rtol=1e-4, atol=1e-5)


def test_out_of_range_budget_and_image_count_mismatch_are_refused(built):
    ids, mask, labels, pixels = batch(built, [(QUESTION, True)])
    with pytest.raises(ValueError, match=r"1\.\.8"):
        built.model(input_ids=ids, attention_mask=mask, pixel_values=pixels, num_visual_tokens=9)
    with pytest.raises(ValueError, match="1 image placeholders but 0 images"):
        built.model(input_ids=ids, attention_mask=mask, num_visual_tokens=2)


def test_uint8_pixels_match_processor_normalised_floats(built):
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    mean = torch.tensor(built.model.config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(built.model.config.image_std).view(1, 3, 1, 1)
    floats = (pixels.float() / 255 - mean) / std
    torch.testing.assert_close(built.model.encode_images(pixels, 5), built.model.encode_images(floats, 5))


def test_grid_features_are_the_selected_layer_without_cls(built):
    pixels = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    features = built.model.grid_features(pixels)
    assert features.shape == (1, 16, 32)  # 4x4 patches, CLS dropped
    normalised = (pixels.float() / 255 - built.model.image_mean) / built.model.image_std
    hidden = built.model.vision_tower(normalised, output_hidden_states=True).hidden_states
    torch.testing.assert_close(features, hidden[-2][:, 1:])


def test_save_and_load_round_trip_gives_identical_logits(built, tmp_path):
    ids, mask, labels, pixels = batch(built, [(QUESTION, True), (CHAT, False)])
    before = built.model(input_ids=ids, attention_mask=mask, pixel_values=pixels, num_visual_tokens=5).logits
    built.model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "mqt_llava"
    for loader in (MQTLlavaForConditionalGeneration, AutoModelForImageTextToText):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, MQTLlavaForConditionalGeneration)
        after = loaded(input_ids=ids, attention_mask=mask, pixel_values=pixels, num_visual_tokens=5).logits
        assert torch.equal(before, after)


def test_generation_is_greedy_deterministic_and_batch_independent(built):
    records = [(QUESTION, True), (CHAT, False)]
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=built.tokenizer.pad_token_id)
    ids, mask, _, pixels = batch(built, records, padding_side="left")
    together = built.model.generate(ids, attention_mask=mask, pixel_values=pixels, num_visual_tokens=4, **kwargs)
    assert together.shape[0] == 2
    for i, record in enumerate(records):
        one_ids, one_mask, _, one_pixels = batch(built, [record], padding_side="left")
        alone = built.model.generate(
            one_ids, attention_mask=one_mask, pixel_values=one_pixels, num_visual_tokens=4, **kwargs
        )
        n = alone.shape[1]
        assert torch.equal(together[i, :n], alone[0])


def test_stages_freeze_the_right_parts(built):
    configure_trainable(built.model, "stage1")
    report = parameter_report(built.model)
    assert report["vision_tower"].trainable == 0
    table = built.model.connector.pos_embed  # a parameter that this preset (position_table: fixed) never trains
    assert not table.requires_grad
    assert report["connector"].trainable == report["connector"].total - table.numel() > 0
    assert report["language_model"].trainable == 0
    configure_trainable(built.model, "stage2")
    report = parameter_report(built.model)
    assert report["vision_tower"].trainable == 0
    assert report["language_model"].trainable == report["language_model"].total
    assert report["all"].trainable == report["connector"].total - table.numel() + report["language_model"].total
    with pytest.raises(ValueError, match="stage"):
        configure_trainable(built.model, "stage3")


def test_llava_7b_preset_builds_on_meta_with_the_papers_sizes():
    built = build_model(load_config(ModelSpec, preset_path("llava-7b")), device="meta")
    model = built.model
    assert next(model.parameters()).device.type == "meta"
    report = parameter_report(model)
    assert report["vision_tower"].total == 303_507_456  # CLIP ViT-L/14-336 vision tower
    assert report["language_model"].total == 6_738_415_616  # Vicuna-7B (Llama-2-7B shape)
    assert model.max_visual_tokens == 256
    assert model.connector.width == 1024 and model.connector.num_heads == 16
    assert built.image_settings.crop_height == 336


def test_config_refuses_unknown_order_and_unknown_connector_kind():
    with pytest.raises(ValueError, match="order"):
        MQTLlavaConfig(connector={"kind": "mqt", "order": "sideways"})
    with pytest.raises(ValueError, match="connector kind 'resampler' is not registered; known: \\['mlp', 'mqt'\\]"):
        MQTLlavaConfig(connector={"kind": "resampler"})


def test_text_only_training_batch_still_gives_every_trainable_part_a_gradient(built):
    configure_trainable(built.model, "stage2")
    ids, mask, labels, _ = batch(built, [(CHAT, False), (CHAT, False)])
    built.model.train()
    built.model(input_ids=ids, attention_mask=mask, labels=labels, num_visual_tokens=4).loss.backward()
    grads = [p.grad for p in built.model.connector.parameters() if p.requires_grad]  # the fixed table: none
    assert all(g is not None for g in grads)  # present, so data-parallel ranks reduce the same tensors
    assert all(torch.count_nonzero(g) == 0 for g in grads)  # and zero: the blank image changes nothing
    built.model.zero_grad(set_to_none=True)
    built.model.eval()
    built.model(input_ids=ids, attention_mask=mask, labels=labels, num_visual_tokens=4).loss.backward()
    assert all(p.grad is None for p in built.model.connector.parameters())  # no extra work outside training
