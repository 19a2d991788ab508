import pytest

from mqt_llava.eval.flops import flops_table, format_table


def test_llava_7b_flops_on_the_meta_device():
    baseline, (m16, m256) = flops_table("llava-7b", [16, 256], text_tokens=64)
    assert baseline.visual_tokens == 576
    # Vicuna-7B prefill: about 2 x 6.7e9 FLOPs per token, plus attention.
    assert 2 * 6.4e9 * (576 + 64) < baseline.llm < 2 * 7.2e9 * (576 + 64)
    assert baseline.vision == m16.vision  # the same CLIP ViT-L/14-336 either way
    assert 0.3e12 < baseline.vision < 0.45e12
    assert baseline.connector == pytest.approx(2 * 576 * (1024 * 4096 + 4096 * 4096), rel=0.01)  # the 2-layer MLP
    assert 1.8 < baseline.total / m256.total < 2.1  # the paper: 2x at 256
    assert baseline.total / m16.total > 5
    text = format_table(baseline, [m16, m256], 64)
    assert "| MQT m=256 | 256 |" in text and "| 2x |" in text
