"""Grad-CAM of visual tokens: the recorded attention is the model's own, the heat maps lie on the
vision grid and depend on the budget, and jobs/explain.py draws them or refuses bad input. The
attention focus tells a collapsed connector (every query looking at the same place) from one whose
queries look at different places."""

import runpy

import numpy as np
import pytest
import torch

from checkout import REPO_ROOT
from mqt_llava.explain import Focus, attention_focus, explain
from mqt_llava.inference import InferenceEngine
from mqt_llava.model.export import save_export
from mqt_llava.toy.world import random_scene, render_scene

QUESTION = "Where is the red square?"


@pytest.fixture
def engine(built):
    return InferenceEngine.from_built(built)


@pytest.fixture
def image():
    return render_scene(random_scene(3), 40, 28)  # not square: the map lies on the padded view


def test_recorded_attention_gives_the_same_tokens_as_the_fused_kernel(built):
    mqt = built.model.connector
    grid = torch.randn(2, 16, mqt.width if mqt.input_proj is None else mqt.input_proj.in_features)
    fused = mqt(grid, 5)
    mqt.record_attention = True
    try:
        explicit = mqt(grid, 5)
        weights = mqt.recorded_attention
    finally:
        mqt.record_attention = False
    torch.testing.assert_close(explicit, fused, rtol=1e-5, atol=1e-6)
    assert weights.shape == (2, mqt.num_heads, 5, 16)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, mqt.num_heads, 5))


def scenes(n: int = 6):
    return [render_scene(random_scene(seed), 40, 28) for seed in range(n)]


def test_attention_focus_tells_a_collapsed_connector_from_one_that_looks_around(built, engine):
    mqt = built.model.connector
    with torch.no_grad():
        mqt.q_proj.weight.zero_()  # every query asks the same thing: one attention pattern, identical tokens
        mqt.q_proj.bias.normal_()
    collapsed = attention_focus(engine, scenes(), [8])[8]
    assert collapsed.similarity == pytest.approx(1.0, abs=1e-4)
    assert collapsed.distinct == pytest.approx(1.0) and collapsed.collapsed
    assert "COLLAPSED" in collapsed.summary()

    mqt.keys = "position_only"  # each query attends to its own place on the grid, sharply
    with torch.no_grad():
        mqt.q_proj.weight.copy_(30 * torch.eye(mqt.width))
        mqt.q_proj.bias.zero_()
        mqt.k_proj.weight.copy_(30 * torch.eye(mqt.width))
    looking = attention_focus(engine, scenes(), [1, 8])
    one, looking = looking[1], looking[8]
    assert looking.similarity < Focus.COLLAPSED and not looking.collapsed
    assert looking.distinct >= 2 and looking.entropy < collapsed.entropy
    assert looking.images == 6 and looking.budget == 8
    assert one.collapsed is False and one.similarity == pytest.approx(1.0)  # one token cannot collapse
    assert not mqt.record_attention and mqt.recorded_attention is None
    with pytest.raises(ValueError, match="at least one image"):
        attention_focus(engine, [], [8])


def test_heat_maps_lie_on_the_grid_and_differ_between_budgets(engine, image):
    maps = {m: explain(engine, image, QUESTION, m, answer="Top left") for m in (2, 8)}
    for e in maps.values():
        assert e.heat.shape == (4, 4)  # small_spec: 32 px images, 8 px patches
        assert e.heat.min() >= 0 and e.heat.max() == pytest.approx(1.0)
        assert e.answer == "Top left"
    assert not np.allclose(maps[2].heat, maps[8].heat)
    one = explain(engine, image, QUESTION, 8, answer="Top left", token=0)
    assert not np.allclose(one.heat, maps[8].heat)
    # explaining leaves the model as it was: no recording, no gradients
    assert not engine.model.connector.record_attention and engine.model.connector.recorded_attention is None
    assert all(p.grad is None for p in engine.model.parameters())


def test_the_models_own_answer_is_explained_by_default(engine, image):
    e = explain(engine, image, QUESTION, 4, max_new_tokens=3)
    from mqt_llava.inference import Request

    assert e.answer == engine.complete([Request(QUESTION, image)], 4, max_new_tokens=3)[0].text
    with pytest.raises(ValueError, match="token must be in 0..3"):
        explain(engine, image, QUESTION, 4, answer="x", token=4)


@pytest.fixture(scope="module")
def explain_job():
    """jobs/explain.py's main, called here with a command line instead of in a new Python (which spent
    ~25 s importing the libraries three times); `python jobs/explain.py` parses its command line with
    the same parser (tests/test_job_commands.py)."""
    return runpy.run_path(str(REPO_ROOT / "jobs" / "explain.py"))["main"]


def test_explain_job_draws_one_png_and_refuses_bad_input(explain_job, built, image, tmp_path, capsys):
    export = tmp_path / "export"
    save_export(built, export)
    image.save(tmp_path / "scene.png")
    common = ["--set", f"model={export}", "--set", f"question={QUESTION}"]
    scene = ["--set", f"image={tmp_path / 'scene.png'}"]
    assert explain_job([*common, *scene, "--set", "budgets=2,M", "--set", f"out={tmp_path / 'o.png'}"]) == 0
    printed = capsys.readouterr().out
    assert "m =    2:" in printed and "m =    8:" in printed
    assert (tmp_path / "o.png").stat().st_size > 5000
    assert explain_job([*common, *scene, "--set", "budgets=2,64"]) == 2
    assert "outside 1..8" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    assert explain_job([*common, "--set", f"image={tmp_path / 'broken.png'}"]) == 2
    assert "image error" in capsys.readouterr().err
