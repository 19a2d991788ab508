import pytest
import torch

from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.model.builder import build_model
from mqt_llava.model.export import save_export
from mqt_llava.model.spec import ImageSpec
from mqt_llava.toy.world import random_scene, render_scene

REQUESTS = [
    Request("What is in the image?", render_scene(random_scene(1), 48, 30)),
    Request("Name a colour."),
    Request("Where is the circle?", render_scene(random_scene(2), 20, 40)),
]
# Eight requests of different prompt lengths, image sizes and modalities: batch 8 vs batch 1.
EIGHT = REQUESTS + [
    Request(
        "How many shapes are there? Answer the question using a single word or phrase.",
        render_scene(random_scene(3), 64, 64),
    ),
    Request("Is there a red square?", render_scene(random_scene(4), 90, 30)),
    Request("Hi"),
    Request("Describe the image in detail.", render_scene(random_scene(5), 33, 77)),
    Request("What colour is the triangle?", render_scene(random_scene(6), 40, 40)),
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


@pytest.mark.parametrize("m", [1, 3, 8])
def test_batch_of_8_answers_equal_batch_of_1(built, m):
    engine = InferenceEngine.from_built(built)
    together = engine.generate(EIGHT, num_visual_tokens=m, max_new_tokens=8)
    assert len(together) == 8 and len(set(together)) > 1  # distinct answers: the check has teeth
    assert together == [engine.generate([r], num_visual_tokens=m, max_new_tokens=8)[0] for r in EIGHT]


def test_export_loads_without_the_builder_and_answers_identically(built, tmp_path):
    save_export(built, tmp_path)
    exported = InferenceEngine.from_export(tmp_path)
    assert exported.image_settings == built.image_settings
    assert exported.aspect == built.spec.image.aspect == "pad"
    original = InferenceEngine.from_built(built)
    for m in (1, 8):
        assert exported.generate(REQUESTS, m, 8) == original.generate(REQUESTS, m, 8)
        torch.testing.assert_close(exported.forward(REQUESTS, m), original.forward(REQUESTS, m))


def test_completions_count_visual_tokens_and_stop_where_asked(built):
    engine = InferenceEngine.from_built(built)
    with_image, text_only = REQUESTS[0], REQUESTS[1]
    prepared = engine.prepare([with_image, text_only])
    a, b = engine.complete([with_image, text_only], num_visual_tokens=5, max_new_tokens=6)
    assert a.prompt_tokens == int(prepared.attention_mask[0].sum()) - 1 + 5  # placeholder -> 5 visual tokens
    assert b.prompt_tokens == int(prepared.attention_mask[1].sum())
    assert 1 <= a.completion_tokens <= 6 and a.finish_reason in ("stop", "length")
    assert a.text == engine.generate([with_image], 5, 6)[0]  # complete() and generate() agree
    if len(a.text) > 1:
        cut = engine.complete([with_image], 5, 6, stop=[a.text[1]])[0]
        assert cut.text == a.text.split(a.text[1])[0] and cut.finish_reason == "stop"


def test_sampling_follows_the_seed_and_differs_from_greedy_somewhere(built):
    engine = InferenceEngine.from_built(built)
    torch.manual_seed(3)
    first = [c.text for c in engine.complete(EIGHT, 4, 8, temperature=1.5)]
    torch.manual_seed(3)
    assert [c.text for c in engine.complete(EIGHT, 4, 8, temperature=1.5)] == first
    assert first != engine.generate(EIGHT, 4, 8)


def test_a_stop_string_stops_decoding_where_it_appears(built):
    import re

    engine = InferenceEngine.from_built(built)
    full = engine.complete([EIGHT[2]], 4, 16)[0]
    stop = re.search(r"[A-Za-z0-9]{2}", full.text[1:])  # two characters the answer goes on past
    assert stop and full.finish_reason == "length", f"the answer {full.text!r} does not suit this check"
    cut = engine.complete([EIGHT[2]], 4, 16, stop=[stop[0]])[0]
    assert cut.text == full.text.split(stop[0])[0] and cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens  # decoding stopped, not only the text cut


@pytest.mark.parametrize("stop", [(), ("Eb",), ("zz", "7r")])
def test_streamed_deltas_add_up_to_the_completion(built, stop):
    from mqt_llava.inference import Completion, Sampling

    engine = InferenceEngine.from_built(built)
    for request in EIGHT[:4]:
        sampling = Sampling(10, stop=stop)
        *deltas, completion = list(engine.stream(request, 4, sampling))
        assert isinstance(completion, Completion) and all(isinstance(d, str) and d for d in deltas)
        assert "".join(deltas) == completion.text
        assert completion == engine.complete([request], 4, **sampling.kwargs())[0]


def test_a_seed_gives_the_same_answer_alone_or_grouped_and_leaves_the_global_rng(built):
    from mqt_llava.inference import Sampling, complete_grouped

    engine = InferenceEngine.from_built(built)
    seeded = Sampling(8, temperature=1.5, top_p=0.9, seed=7)
    alone = engine.complete([EIGHT[0]], 4, **seeded.kwargs())[0]
    state = torch.random.get_rng_state()
    grouped = complete_grouped(engine, [(r, 4, seeded) for r in EIGHT[:3]])
    assert torch.equal(state, torch.random.get_rng_state())
    assert grouped[0] == alone
    others = {engine.complete([EIGHT[0]], 4, **Sampling(8, 1.5, (), 0.9, s).kwargs())[0].text for s in range(6)}
    assert len(others) > 1  # the seed matters: the check has teeth


def test_earlier_turns_and_a_system_prompt_reach_the_model(built):
    engine = InferenceEngine.from_built(built)
    plain = REQUESTS[0]
    turns = Request(plain.question, plain.image, history=(("Hello there", "Hi."),))
    system = Request(plain.question, plain.image, system="Be brief.")
    assert engine.prompt_tokens(turns, 5) > engine.prompt_tokens(plain, 5)
    assert engine.prompt_tokens(plain, 5) == engine.complete([plain], 5, 2)[0].prompt_tokens
    logits = [engine.forward([r], 5)[0, -1] for r in (plain, turns, system)]
    assert not torch.allclose(logits[0], logits[1]) and not torch.allclose(logits[0], logits[2])


def test_a_cancelled_stream_stops_generating(built):
    import threading

    from mqt_llava.inference import Sampling

    engine = InferenceEngine.from_built(built)
    cancel = threading.Event()
    items = engine.stream(EIGHT[2], 4, Sampling(200), cancel)
    next(items)  # the first delta: generation is under way
    cancel.set()  # what the tier does when its client goes away
    completion = list(items)[-1]
    assert completion.completion_tokens < 200 and completion.finish_reason == "length"
    assert engine.complete([EIGHT[2]], 4, 200, cancel=cancel)[0].completion_tokens == 1


@pytest.mark.parametrize("m", [1, 8])
def test_the_engine_decode_loop_gives_the_tokens_of_transformers_generate(built, m):
    engine = InferenceEngine.from_built(built)
    batch = engine.prepare(EIGHT)
    common = dict(
        num_visual_tokens=m,
        max_new_tokens=10,
        pad_token_id=engine.tokenizer.pad_token_id,
        eos_token_id=engine.tokenizer.eos_token_id,
    )
    inputs = (batch.input_ids, batch.attention_mask, batch.pixel_values)
    with torch.inference_mode():
        greedy = engine.model.generate(*inputs, do_sample=False, **common)
        assert torch.equal(engine.decode(batch, m, 10), greedy)
        torch.manual_seed(5)
        sampled = engine.model.generate(*inputs, do_sample=True, temperature=1.5, top_k=0, top_p=0.9, **common)
        torch.manual_seed(5)
        assert torch.equal(engine.decode(batch, m, 10, temperature=1.5, top_p=0.9), sampled)
