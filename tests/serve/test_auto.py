from mqt_llava.serve.auto import AutoRouter, AutoSpec

BUDGETS = {"fast": 4, "balanced": 16, "full": 32}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def router(**kw):
    clock = Clock()
    return AutoRouter(BUDGETS, AutoSpec(target_latency_s=1.0, cooldown_s=2.0, **kw), clock=clock), clock


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
