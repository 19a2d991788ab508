from collections import Counter

import pytest

from mqt_llava.model.schedules import TokenSchedule, schedule_support


def test_paper_linear_schedule_is_every_even_number_up_to_256():
    assert schedule_support("linear", 256, 2) == tuple(range(2, 257, 2))


def test_log_schedule_is_powers_of_two_up_to_M():
    assert schedule_support("log", 256) == (2, 4, 8, 16, 32, 64, 128, 256)
    assert schedule_support("log", 100) == (2, 4, 8, 16, 32, 64, 100)


def test_fixed_schedule_is_M_only():
    assert schedule_support("fixed", 64) == (64,)


def test_fixed_schedule_at_a_chosen_budget_draws_only_it():
    assert schedule_support("fixed", 64, tokens=8) == (8,)
    assert {TokenSchedule("fixed", 64, tokens=8).draw(step) for step in range(50)} == {8}
    with pytest.raises(ValueError, match="1..64"):
        schedule_support("fixed", 64, tokens=65)


def test_linear_schedule_always_reaches_M():
    assert schedule_support("linear", 10, 4) == (4, 8, 10)
    assert schedule_support("linear", 5, 1) == (1, 2, 3, 4, 5)


@pytest.mark.parametrize(("kind", "m", "step"), [("cubic", 8, 2), ("linear", 0, 2), ("linear", 8, 0), ("linear", 8, 9)])
def test_bad_schedules_are_refused(kind, m, step):
    with pytest.raises(ValueError):
        schedule_support(kind, m, step)


def test_draw_is_a_pure_function_of_seed_and_step():
    a, b = TokenSchedule("linear", 64, seed=7), TokenSchedule("linear", 64, seed=7)
    draws = [a.draw(s) for s in range(200)]
    assert draws == [b.draw(s) for s in range(200)]
    assert draws == [a.draw(s) for s in range(200)]  # no hidden state advanced
    assert [a.draw(s) for s in reversed(range(200))] == draws[::-1]  # order does not matter
    assert draws != [TokenSchedule("linear", 64, seed=8).draw(s) for s in range(200)]


@pytest.mark.parametrize("kind", ["linear", "log", "fixed"])
def test_draws_cover_exactly_the_support_uniformly(kind):
    schedule = TokenSchedule(kind, 32, step=4, seed=1)
    counts = Counter(schedule.draw(s) for s in range(4000))
    assert set(counts) == set(schedule.support)
    expected = 4000 / len(schedule.support)
    assert all(abs(n - expected) < 0.25 * expected for n in counts.values())


def test_negative_step_is_refused():
    with pytest.raises(ValueError):
        TokenSchedule("log", 8).draw(-1)
