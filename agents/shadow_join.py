"""The shadow join's state: results of one request held until its comparison is complete.

Pure (no I/O; the clock is injectable). Why not a Faust table, as before: Faust lets a table be
changed only inside stream iteration (faust-streaming #497), so the old expiry timer crashed
every worker 16 minutes after its first result; and on a broker without log compaction (the
embedded Tansu) a table's changelog grows with every write, so recovery at start-up replays all
of history. The join's state is short-lived and cheap to lose, so it lives in memory:

- an entry is dropped as soon as every version that answers the request has answered (then all
  comparisons are out), and never stored when no comparison can come of it (no stable version,
  or no candidate answers the request);
- an entry older than `ttl_s` is dropped (a candidate that never answers);
- at most `max_pending` entries are held; beyond that the least recently touched go first.

What a restart or a rebalance costs: the pairs whose first half was consumed and committed before
it and whose second half comes after are not compared (they are counted nowhere, like any result
that arrives after its partner expired). Everything consumed after the last commit is consumed
again, so it is only the pairs straddling the commit point: a handful of comparisons per restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache


@dataclass
class JoinStats:
    stored: int = 0
    completed: int = 0
    expired: int = 0
    evicted: int = 0  # dropped for room before they completed or expired


class _Pending(TTLCache[str, Any]):
    """A TTLCache that counts the entries it drops for room (its popitem on a full cache)."""

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float], stats: JoinStats):
        super().__init__(maxsize=maxsize, ttl=ttl, timer=timer)
        self._stats = stats

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self._stats.evicted += 1
        return item


@dataclass
class ShadowJoin:
    """request_id -> {version_id: the result's JSON}, bounded in time and in size."""

    ttl_s: float = 900.0
    max_pending: int = 20_000
    clock: Callable[[], float] = time.monotonic
    stats: JoinStats = field(default_factory=JoinStats)

    def __post_init__(self) -> None:
        if self.ttl_s <= 0 or self.max_pending < 1:
            raise ValueError("ttl_s must be > 0 and max_pending >= 1")
        self._entries = _Pending(self.max_pending, self.ttl_s, self.clock, self.stats)

    def __len__(self) -> int:
        return len(self._entries)

    def expire(self) -> int:
        """Drop the entries older than the TTL; how many went."""
        gone = len(list(self._entries.expire()))
        self.stats.expired += gone
        return gone

    def add(self, request_id: str, version_id: str, raw: str,
            answering: Iterable[str]) -> dict[str, str]:
        """Record one result; the results of the request seen so far (this one included).

        `answering`: every version that answers this request (the serving one and its
        mirrors). The entry is dropped once all of them are in, and not kept at all when only
        this version answers.
        """
        self.expire()
        entry = self._entries.get(request_id)
        if entry is None:
            entry = {}
        entry[version_id] = raw
        expected = set(answering)
        if expected <= entry.keys():
            if request_id in self._entries:
                del self._entries[request_id]
                self.stats.completed += 1
            return entry
        if request_id not in self._entries:
            # Set once, then mutated in place: the TTL counts from the first result.
            self._entries[request_id] = entry
            self.stats.stored += 1
        return entry


__all__ = ["JoinStats", "ShadowJoin"]
