"""The pure decisions behind infra/faust_compat.py's patches, apart from the patches that act
on them: the idle fetch wait's policy (patch 1), in-order delivery (patch 2), and the
trampoline that lets a started coroutine go on under another task (patch 5). No Faust, no
aiokafka: what each returns depends only on its arguments (and a clock), so the tests can
drive every case."""

from __future__ import annotations

import time
from collections.abc import Mapping


def idle_fetch_wait_ms(quiet_s: float, short_ms: int, idle_after_s: float,
                       idle_wait_ms: int) -> int:
    """The next fetch's wait, `quiet_s` after the consumer last fetched records: the short wait
    while records keep coming, the idle wait (never shorter) once nothing came for
    `idle_after_s`; either setting 0 keeps the short wait."""
    if idle_after_s <= 0 or idle_wait_ms <= 0 or quiet_s < idle_after_s:
        return short_ms
    return max(short_ms, idle_wait_ms)


class IdleFetchWait:
    """The fetch wait of one consumer: `after_fetch(got_records)` after each fetch -> the wait
    of the next one."""

    def __init__(self, short_ms: int, idle_after_s: float, idle_wait_ms: int,
                 clock=time.monotonic) -> None:
        self.short_ms, self.idle_after_s, self.idle_wait_ms = short_ms, idle_after_s, idle_wait_ms
        self.clock = clock
        self.last_records = clock()

    def after_fetch(self, got_records: bool) -> int:
        now = self.clock()
        if got_records:
            self.last_records = now
        return idle_fetch_wait_ms(now - self.last_records, self.short_ms, self.idle_after_s,
                                  self.idle_wait_ms)


def faust_internal(topic: str) -> bool:
    """Faust's own topics (table changelogs, the leader topic) are read by its recovery."""
    return topic.endswith("-changelog") or "__assignor" in topic


def expected_after_seek(committed: Mapping) -> dict:
    """Committed offsets (None or negative: none committed) -> next offsets to expect."""
    return {tp: off for tp, off in committed.items() if off is not None and off >= 0}


def is_skip(expected: int | None, offset: int) -> bool:
    """A record ahead of the next expected one means records in between were skipped."""
    return expected is not None and offset > expected


def lowest_offsets(items) -> dict:
    """Queued events -> {partition: lowest offset} (other items, e.g. plain values, ignored)."""
    out: dict = {}
    for item in items:
        message = getattr(item, "message", None)
        tp, offset = getattr(message, "tp", None), getattr(message, "offset", None)
        if tp is None or not isinstance(offset, int) or faust_internal(tp.topic):
            continue
        out[tp] = min(offset, out.get(tp, offset))
    return out


def rewinds_due(dropped: Mapping, expected: Mapping) -> dict:
    """Dropped records to fetch again: those the consumer's position has already passed. A
    position at or below the dropped offset (a seek to the committed offset since) delivers
    them anyway, and an unknown one (a seek with nothing committed) is left alone: seeking
    forward could skip records."""
    return {tp: off for tp, off in dropped.items()
            if expected.get(tp) is not None and off < expected[tp]}


def passed_unseen(position: int | None, expected: int | None) -> bool:
    """Between two fetches the consumer's position must equal the next offset the streams
    were handed; a position ahead means records were fetched and never handed on."""
    return position is not None and expected is not None and position > expected


class Continue:
    """Awaitable that goes on with `coro`, which already ran up to its first wait and yielded
    `pending`: whoever awaits this (a task of `wait_first`) takes over from there."""

    __slots__ = ("coro", "pending")

    def __init__(self, coro, pending) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self):
        coro, value = self.coro, self.pending
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - a cancellation or error thrown in
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


__all__ = ["Continue", "IdleFetchWait", "expected_after_seek", "faust_internal",
           "idle_fetch_wait_ms", "is_skip", "lowest_offsets", "passed_unseen", "rewinds_due"]
