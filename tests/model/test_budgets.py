import pytest

from mqt_llava.model.budgets import BudgetError, check_budget, default_budgets, parse_budget, parse_budgets


def test_parse_budgets_reads_m_sorts_and_drops_repeats():
    assert parse_budgets("16, 2,M,2", 64) == [2, 16, 64]
    assert parse_budgets([8, "M"], 32) == [8, 32]
    assert parse_budget("M", 256) == 256 and parse_budget(7, 256) == 7


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0,2,300", r"budgets: 0, 300 outside 1..256 \(the model's M\)"),
        ("2,x", "expected integers or M"),
        ("", "no budgets given"),
        ([2.5], "expected integers or M"),
    ],
)
def test_bad_budgets_get_one_message(spec, message):
    with pytest.raises(BudgetError, match=message):
        parse_budgets(spec, 256)


def test_check_budget_names_the_field_and_refuses_non_ints():
    assert check_budget(1, 1) == 1
    with pytest.raises(BudgetError, match="visual_tokens: 33 outside 1..32"):
        check_budget(33, 32)
    with pytest.raises(TypeError, match="must be an int"):
        check_budget(True, 32)


def test_default_budgets_cut_the_paper_sweep_at_m():
    assert default_budgets(256) == [2, 4, 8, 16, 36, 64, 144, 256]
    assert default_budgets(32) == [2, 4, 8, 16, 32]
    assert default_budgets(64, (8, 16, 64)) == [8, 16, 64]
