import itertools

import pytest
import torch

from mqt_llava.model.connectors.mqt import KEY_MODES, ORDERS, MatryoshkaQueryTransformer, sincos_2d

VARIANTS = list(itertools.product(ORDERS, KEY_MODES))


def make(order="attention_then_projection", keys="content_and_position", num_queries=16):
    torch.manual_seed(0)
    return MatryoshkaQueryTransformer(num_queries, vision_width=32, llm_width=48, num_heads=4, order=order, keys=keys)


@pytest.mark.parametrize(("order", "keys"), VARIANTS)
def test_output_for_m_is_the_first_m_rows_of_the_output_for_M(order, keys):
    mqt = make(order, keys)
    for seed in range(3):
        grid = torch.randn(2, 36, 32, generator=torch.Generator().manual_seed(seed)) * 3
        full = mqt(grid, 16)
        assert full.shape == (2, 16, 48)
        for m in (1, 2, 3, 7, 8, 15):
            torch.testing.assert_close(mqt(grid, m), full[:, :m], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("order", "keys"), VARIANTS)
def test_first_m_tokens_never_depend_on_later_queries(order, keys):
    mqt = make(order, keys)
    grid = torch.randn(2, 16, 32)
    before = mqt(grid, 5)
    with torch.no_grad():
        mqt.queries[5:] = torch.randn_like(mqt.queries[5:]) * 10
    assert torch.equal(mqt(grid, 5), before)
    assert not torch.allclose(mqt(grid, 16)[:, 5:], before.new_zeros(2, 11, 48))


@pytest.mark.parametrize("bad", [0, -1, 17, 1000])
def test_budget_outside_1_to_M_is_refused_naming_the_range(bad):
    with pytest.raises(ValueError, match=r"1\.\.16"):
        make()(torch.randn(1, 16, 32), bad)


def test_budget_must_be_an_integer():
    with pytest.raises(TypeError):
        make()(torch.randn(1, 16, 32), 4.0)


def test_orders_attend_at_their_own_width():
    assert make("attention_then_projection").width == 32
    assert make("projection_then_attention").width == 48
    assert make("projection_then_attention").output_proj is None


def test_position_only_keys_ignore_the_image_and_content_keys_do_not():
    grids = torch.randn(2, 16, 32), torch.randn(2, 16, 32)
    for keys, same in (("position_only", True), ("content_and_position", False)):
        mqt = make(keys=keys)
        keys_seen = []
        hook = mqt.k_proj.register_forward_hook(lambda module, args, out, into=keys_seen: into.append(args[0]))
        for grid in grids:
            mqt(grid, 4)
        hook.remove()
        assert torch.equal(keys_seen[0], keys_seen[1]) is same


def keys_seen(mqt, grid):
    seen = []
    hook = mqt.k_proj.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    mqt(grid, 4)
    hook.remove()
    return seen[0][0]  # (N, width): the first image's keys, before the key projection


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_normalised_content_keys_keep_the_position_however_much_the_features_vary(scale):
    """The pilot's collapse: with LN(features + position), features far larger than the position
    table leave keys that no longer say where a patch is, so every query can pick one patch."""
    feature = torch.randn(1, 1, 32)
    grid = (scale * feature).expand(1, 16, 32)  # every patch looks the same: only position tells them apart
    position_spread = make().key_positions(16).std(0).mean()
    spread = {keys: keys_seen(make(keys=keys), grid).std(0).mean() for keys in KEY_MODES}
    torch.testing.assert_close(spread["normalised_content_and_position"], position_spread)
    if scale > 1:  # the position's share of LN(features + position) shrinks as the features grow
        assert spread["content_and_position"] < 0.1 * position_spread
    else:
        assert spread["content_and_position"] > 0.3 * position_spread


def test_initialisation_is_the_official_codes():
    """Attention projections as MultiheadAttention's stacked Xavier-uniform input projection, the
    output projection at std llm_width ** -0.5: with std 0.02 everywhere (this code until the pilot
    measured it) attention logits start near zero, every query averages the whole grid alike, and
    the tokens start as copies of one another."""
    torch.manual_seed(0)
    mqt = MatryoshkaQueryTransformer(64, vision_width=128, llm_width=192, num_heads=4)
    bound = (6 / (4 * 128)) ** 0.5
    for linear in (mqt.q_proj, mqt.k_proj, mqt.v_proj):
        assert linear.weight.abs().max() <= bound
        torch.testing.assert_close(linear.weight.std(), torch.tensor(bound / 3**0.5), rtol=0.05, atol=0)
        assert not linear.bias.any()
    torch.testing.assert_close(mqt.output_proj.weight.std(), torch.tensor(192**-0.5), rtol=0.05, atol=0)
    torch.testing.assert_close(mqt.out_proj.weight.std(), torch.tensor(0.02), rtol=0.1, atol=0)
    torch.testing.assert_close(mqt.queries.std(), torch.tensor(0.02), rtol=0.1, atol=0)


def test_key_positions_are_the_query_table_resized_to_the_grid():
    mqt = make(num_queries=16)  # 4 x 4 query grid
    torch.testing.assert_close(mqt.key_positions(16), sincos_2d(4, 32))
    resized = mqt.key_positions(64)
    assert resized.shape == (64, 32)
    # corners of the 8x8 grid lie near the corners of the 4x4 table
    assert torch.dist(resized[0], sincos_2d(4, 32)[0]) < torch.dist(resized[0], sincos_2d(4, 32)[15])


def test_grid_that_is_not_square_is_refused():
    with pytest.raises(ValueError, match="square grid"):
        make()(torch.randn(1, 15, 32), 4)


def test_non_square_M_uses_the_first_M_cells_of_a_larger_query_grid():
    mqt = make(num_queries=10)
    assert mqt.query_side == 4
    assert mqt(torch.randn(1, 16, 32), 10).shape == (1, 10, 48)


def test_heads_must_divide_the_attention_width():
    with pytest.raises(ValueError, match="num_heads"):
        MatryoshkaQueryTransformer(8, vision_width=30, llm_width=48, num_heads=4)


def test_gradients_reach_only_the_queries_that_were_used():
    mqt = make()
    mqt(torch.randn(2, 16, 32), 3).sum().backward()
    grad = mqt.queries.grad
    assert grad[:3].abs().sum() > 0
    assert torch.equal(grad[3:], torch.zeros_like(grad[3:]))
