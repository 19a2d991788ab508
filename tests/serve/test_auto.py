from mqt_llava.serve.auto import AutoRouter, AutoSpec

BUDGETS = {"fast": 4, "balanced": 16, "full": 32}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def router(**kw):
    clock = Clock()
    spec = AutoSpec(**({"target_latency_s": 1.0, "cooldown_s": 2.0, "window_s": 1.0, "min_samples": 5} | kw))
    return AutoRouter(BUDGETS, spec, clock=clock), clock


def feed(r, clock, latency_of, seconds, every=0.1):
    chosen = []
    for _ in range(int(seconds / every)):
        clock.now += every
        tier = r.choose()
        chosen.append(tier)
        r.observe(tier, latency_of(tier))
    return chosen


def test_steps_down_under_load_and_back_up_when_it_falls():
    r, clock = router()
    assert r.choose() == "full"  # the largest budget while latency allows
    overloaded = {"full": 3.0, "balanced": 1.5, "fast": 0.6}
    chosen = feed(r, clock, overloaded.get, 10)
    assert chosen[-1] == "fast" and "balanced" in chosen  # one tier at a time
    calm = {"full": 0.3, "balanced": 0.2, "fast": 0.1}
    chosen = feed(r, clock, calm.get, 10)
    assert chosen[-1] == "full"


def test_holds_a_tier_that_meets_the_target_without_oscillating():
    r, clock = router()
    steady = {"full": 1.4, "balanced": 0.8, "fast": 0.3}  # balanced is inside (0.5, 1.0] x target
    chosen = feed(r, clock, steady.get, 30)
    assert set(chosen[-200:]) == {"balanced"}


def test_cooldown_spaces_the_steps():
    r, clock = router()
    feed(r, clock, lambda tier: 5.0, 1.5)  # within the first cooldown window only one step
    assert r.choose() == "balanced"
    feed(r, clock, lambda tier: 5.0, 2.5)
    assert r.choose() == "fast"


def test_a_slow_tail_with_a_good_mean_steps_down_and_the_decision_is_recorded():
    r, clock = router()
    calls = iter(range(10**6))
    # mean 0.33 s (a smoothed mean never passes 0.6 s), p95 1.5 s
    tail = lambda tier: 1.5 if next(calls) % 10 == 0 else 0.2  # noqa: E731
    feed(r, clock, tail, 3)
    assert r.choose() != "full"
    decision = r.state()["decisions"][0]
    assert decision["from"] == "full" and decision["p95_s"] == 1.5


def test_the_router_waits_for_enough_samples_and_forgets_old_ones():
    r, clock = router(min_samples=20)
    feed(r, clock, lambda tier: 5.0, 1.9)  # 19 answers in the window: not enough to act on
    assert r.choose() == "full" and r.state()["latency_s"] is None
    clock.now += 5.0  # the window slides past them
    feed(r, clock, lambda tier: 0.1, 1.0)
    assert r.choose() == "full" and r.state()["samples"] == 10


def test_percentile_is_the_nearest_rank():
    from mqt_llava.serve.auto import percentile

    values = list(range(1, 101))
    assert percentile(values, 0.95) == 95 and percentile(values, 0.99) == 99 and percentile([7.0], 0.95) == 7.0
