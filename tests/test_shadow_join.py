"""The shadow join's state (agents/shadow_join.py): dropped when complete, expired, bounded."""

from __future__ import annotations

import pytest

from agents.shadow_join import ShadowJoin


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ALL = {"stable", "cand-a", "cand-b"}


def test_entry_waits_for_every_answering_version_then_goes():
    join = ShadowJoin(ttl_s=10, max_pending=100, clock=Clock())
    assert join.add("r1", "stable", "S", ALL) == {"stable": "S"}
    assert join.add("r1", "cand-a", "A", ALL) == {"stable": "S", "cand-a": "A"}
    assert len(join) == 1
    assert join.add("r1", "cand-b", "B", ALL) == {"stable": "S", "cand-a": "A", "cand-b": "B"}
    assert len(join) == 0
    assert (join.stats.stored, join.stats.completed, join.stats.expired) == (1, 1, 0)


def test_a_lone_answer_is_never_stored():
    """0 shadows: the stable result alone completes its request; the join holds nothing."""
    join = ShadowJoin(ttl_s=10, max_pending=100, clock=Clock())
    for i in range(1000):
        assert join.add(f"r{i}", "stable", "S", {"stable"}) == {"stable": "S"}
    assert len(join) == 0 and join.stats.stored == 0


def test_entries_expire_after_the_ttl_counted_from_the_first_result():
    clock = Clock()
    join = ShadowJoin(ttl_s=10, max_pending=100, clock=clock)
    join.add("old", "stable", "S", ALL)
    clock.now += 6
    join.add("old", "cand-a", "A", ALL)  # a later result does not extend the entry's life
    join.add("new", "stable", "S", ALL)
    clock.now += 5
    assert join.expire() == 1
    assert len(join) == 1 and join.stats.expired == 1
    # expiry also runs on every add: a candidate arriving after its partner expired starts over
    clock.now += 20
    assert join.add("old", "cand-b", "B", ALL) == {"cand-b": "B"}
    assert join.stats.expired == 2 and len(join) == 1


def test_size_is_bounded_whatever_the_traffic():
    join = ShadowJoin(ttl_s=3600, max_pending=50, clock=Clock())
    for i in range(10_000):
        join.add(f"r{i}", "stable", "S", ALL)  # no candidate ever answers
        assert len(join) <= 50
    assert join.stats.evicted == 10_000 - 50
    # the newest are kept
    assert join.add("r9999", "cand-a", "A", ALL) == {"stable": "S", "cand-a": "A"}


@pytest.mark.parametrize("kw", [{"ttl_s": 0}, {"max_pending": 0}])
def test_bad_bounds_are_refused(kw):
    with pytest.raises(ValueError):
        ShadowJoin(**kw)
