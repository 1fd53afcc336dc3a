"""Every patch reviewbus makes to Faust, mode and aiokafka internals: here and nowhere else.

Written against faust-streaming 0.15.3, mode-streaming 0.7.1 and aiokafka 0.14.0; pyproject.toml
pins them below the next minor version. `install()` first runs `self_check()`
(infra/faust_check.py): every attribute it replaces (and every private one the guards call)
must exist with the parameters it was written against, otherwise the worker refuses to start
with one line (`FaustIncompatible`) instead of losing records silently. The pure decisions the
patches act on are in infra/consumer_rules.py. Each guard's firings are counted in
`reviewbus_faust_guard_firings_total{guard}`.

The patches, and where upstream stands:

1. `AIOKafkaConsumerThread._create_worker_consumer` (faust, transport/drivers/aiokafka.py):
   Faust passes `fetch_max_wait_ms=1500` to the worker's aiokafka consumer and has no setting
   for it. Tansu holds every fetch that long even when data arrives meanwhile, so each hop
   waited up to 1.5 s; the patch sets `FETCH_MAX_WAIT_MS` (infra/kafka.py) on the consumer
   before `start()` reads it. No upstream issue asks for the setting (none found); no fix.
   **The idle fetch wait** (docs/operations/long-running.md): after
   `REVIEWBUS_FETCH_IDLE_AFTER_S` with no records, the consumer's fetches wait
   `REVIEWBUS_FETCH_IDLE_WAIT_MS` instead of 20 ms, until a fetch returns records again. The
   patched `_create_worker_consumer` wraps that consumer's `start()` (which creates its
   `Fetcher`) and the fetcher's `_proc_fetch_request`, to set `Fetcher._fetch_max_wait_ms`, read
   when the next request is built. Metrics: `reviewbus_faust_fetch_wait_ms`,
   `reviewbus_faust_fetch_wait_switches_total{to}`.

2. `Consumer.getmany`, `Consumer.seek`, `ThreadDelegateConsumer.seek_to_committed` (faust,
   transport/consumer.py): in-order delivery. After a rebalance Faust can resume the fetcher
   before it seeks the partitions to their committed offsets, and a fetch already under way
   returns records from ahead of that position. Faust takes the jump for a gap in the log, and
   it records its read position after a seek as the committed offset itself (the *next*
   record), so a jump of one record is not even seen. Skipped records are never processed:
   with a jump of one the commit position stops for good, with a larger one the offsets in
   between are committed past (`kill -9` under load lost about 5 % of the requests in
   tests/test_reliability_crash.py). Upstream: faust-streaming#216 (fixed by #217, 0.6.11),
   #241 and #256 (0.7.x) closed the known orderings, yet 0.15.3 still shows the skip;
   faust-streaming#318 (read offset vs committed offset) and #606 (wrong commit around gaps)
   are open. Our topics have no gaps (no compaction, no transactions), so a record ahead of
   the next expected offset is always a skip: seek back to it and drop the rest of that
   partition's fetch (guard `skip_ahead`); a consumer position past what the streams were
   handed is sought back too (guard `position_ahead`). `MAX_REWINDS` per (partition, offset)
   lets a genuine gap through (counted as `gap_let_through`).

3. `FlowControlEvent.clear` (mode, utils/queues.py): every `flow_control.resume()` empties
   the stream queues, and recovery resumes twice; records fetched in between are thrown away
   while the consumer's position is past them, so they never come again and the commit
   position stops (the crash-loop test lost two of three requests). Upstream: faust-streaming
   #596 ("A race condition in recovery causes unrecoverable gaps in acked offsets"), open, no
   fix. The patch notes the lowest thrown-away offset per partition; the next `getmany` seeks
   back to it when the position has passed it (guard `queue_cleared`).

4. `App._consumer_wait_empty` (faust, app/base.py): on every revocation Faust waits, with no
   bound, until every record a stream took has been acked (`Consumer.wait_empty`). A record
   that one of several streams of a topic took while flow control dropped the other copies
   (patch 3), or that an agent holds across the generation change (a sink retrying a store
   that is down, a slow batch), is never acked in this generation, so the worker never
   rejoins: with several workers the group rebalances forever and nobody consumes
   (tests/test_rebalance.py, before this guard). Upstream: robinhood/faust#402 ("Faust hangs
   with wait_empty: Waiting for [...] tasks", open), faust-streaming#133 (the same hang with
   two workers, closed for its Cython cause only) and faust-streaming#527 (no-ack streams
   across a rebalance, open); no fix. The patch bounds the wait during a
   rebalance (not at shutdown) to `REBALANCE_WAIT_EMPTY_S`, then forgets those records'
   tracking and commits what was acked (guard `wait_empty_timeout`): nothing past them is
   committed, so whoever owns their partitions next reads them again (duplicates, not
   losses).

5. `Consumer.wait_first` (mode's, inherited): `Consumer._drain_messages` delivers each fetched
   record with `wait_first(callback(message), self.suspend_flow.wait())`, four tasks and an
   `asyncio.wait` per record. The patch runs the delivery inline until it first has to wait
   (then the original race goes on with it: `consumer_rules.Continue`); a delivery that needs
   no wait costs no task and yields one loop turn, as the original did. Only that call shape,
   and never while the consumer is stopped or crashed. A cost, not an upstream bug: Faust's
   read 89 -> 50 us per record (docs/concepts/batching.md, tests/test_inline_delivery.py).

Besides the patches, `aiokafka_producer(app)` reads Faust's private producer handle: the hops
send their outputs with it (streams/context.py `send_all`), not through `Topic.send`.

At-least-once: a record may be processed twice after a guard fires; storage is idempotent.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator

from prometheus_client import Counter, Gauge

from . import faust_check
from .consumer_rules import (
    Continue,
    IdleFetchWait,
    expected_after_seek,
    faust_internal,
    idle_fetch_wait_ms,
    is_skip,
    lowest_offsets,
    passed_unseen,
    rewinds_due,
)
from .faust_check import FaustIncompatible, self_check

log = logging.getLogger("reviewbus")

MAX_REWINDS = 3
# Below the group's rebalance timeout (streams/app.py), so a revoking member still rejoins.
REBALANCE_WAIT_EMPTY_S = 1.0
_MARK = "_reviewbus_in_order"
# The worker's consumer's idle fetch wait (idle_after_s, idle_wait_ms), set by install().
_idle_fetch = (0.0, 0)

GUARDS = ("skip_ahead", "position_ahead", "queue_cleared", "gap_let_through",
          "wait_empty_timeout")
GUARD_FIRINGS = Counter("reviewbus_faust_guard_firings_total",
                        "Times a guard of infra/faust_compat.py corrected Faust's consumer",
                        ["guard"])
for _guard in GUARDS:  # every series exists from the start: a rate of 0 is an answer too
    GUARD_FIRINGS.labels(guard=_guard)
FETCH_WAIT_SWITCHES = Counter("reviewbus_faust_fetch_wait_switches_total",
                              "Times the worker's Faust consumer changed its fetch wait: to the "
                              "idle wait after a quiet spell, or back to the short one",
                              ["to"])
for _to in ("idle", "short"):
    FETCH_WAIT_SWITCHES.labels(to=_to)
FETCH_WAIT_MS = Gauge("reviewbus_faust_fetch_wait_ms",
                      "The fetch.max.wait.ms of the worker's Faust consumer's next fetch")


def install(fetch_idle_after_s: float | None = None, fetch_idle_wait_ms: int | None = None
            ) -> None:
    """Check, then patch (idempotent: a second call changes only the idle fetch wait of
    consumers created after it, when it names one; 0 keeps the short wait)."""
    global _idle_fetch
    from faust.app.base import App
    from faust.transport.consumer import Consumer, ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from mode.utils.queues import FlowControlEvent

    self_check()
    if fetch_idle_after_s is not None and fetch_idle_wait_ms is not None:
        _idle_fetch = (fetch_idle_after_s, fetch_idle_wait_ms)
    if getattr(Consumer.getmany, _MARK, False):
        return
    replaced = {
        (AIOKafkaConsumerThread, "_create_worker_consumer"): _short_fetch_wait,
        (Consumer, "getmany"): _in_order_getmany,
        (Consumer, "seek"): _seek,
        (ThreadDelegateConsumer, "seek_to_committed"): _seek_to_committed,
        (FlowControlEvent, "clear"): _clear,
        (App, "_consumer_wait_empty"): _bounded_wait_empty,
        (Consumer, "wait_first"): _inline_delivery,
    }
    for (owner, attr), make in replaced.items():
        original = getattr(owner, attr)
        faust_check.ORIGINALS[(owner.__module__, owner.__name__, attr)] = original
        patched = make(original)
        setattr(patched, _MARK, True)
        setattr(owner, attr, patched)


# ---- 5. the delivery of each fetched record ------------------------------------------------


def _inline_delivery(original):
    from mode.services import WaitResults

    wait_code = asyncio.Event.wait.__code__

    async def wait_first(self, *coros, timeout=None):
        if (len(coros) != 2 or timeout is not None or not inspect.iscoroutine(coros[0])
                or not inspect.iscoroutine(coros[1]) or coros[1].cr_code is not wait_code
                or self._stopped.is_set() or self._crashed.is_set()):
            return await original(self, *coros, timeout=timeout)
        delivery, other = coros
        try:
            pending = delivery.send(None)
        except StopIteration as done:
            other.close()
            await asyncio.sleep(0)  # one loop turn per record, as the original's wait gave
            return WaitResults([delivery], [done.value], False)
        except BaseException:
            other.close()
            raise
        return await original(self, Continue(delivery, pending), other)

    return wait_first


def aiokafka_producer(app):
    """The aiokafka producer under Faust's (started with the app's producer service): the
    hops hand it their outputs directly (streams/context.py `send_all`), past `Topic.send`.
    Only for at-least-once: with exactly-once, Faust sends through a transaction's producer."""
    from faust.types.enums import ProcessingGuarantee

    if app.conf.processing_guarantee != ProcessingGuarantee.AT_LEAST_ONCE:
        raise FaustIncompatible("the hops send with Faust's producer directly, which holds only "
                                f"for at-least-once, not {app.conf.processing_guarantee}")
    return app.producer._ensure_producer()


# ---- 1. the fetch wait ------------------------------------------------------------------------


def adapt_fetch_wait(consumer, idle_after_s: float, idle_wait_ms: int, *,
                     gauge: Gauge | None = None, switches: Counter | None = None
                     ) -> IdleFetchWait | None:
    """Let a started aiokafka consumer's fetches wait `idle_wait_ms` once it fetched nothing
    for `idle_after_s` (its own fetch wait otherwise); None (nothing changed) when either is 0.
    `gauge` and `switches`: the wait now and the switches counted (`to` idle or short), by
    default the Faust consumer's (the hops' consumer has its own: streams/flows/hops.py)."""
    gauge = FETCH_WAIT_MS if gauge is None else gauge
    switches = FETCH_WAIT_SWITCHES if switches is None else switches
    fetcher = consumer._fetcher
    gauge.set(fetcher._fetch_max_wait_ms)
    if idle_after_s <= 0 or idle_wait_ms <= 0:
        return None
    policy = IdleFetchWait(fetcher._fetch_max_wait_ms, idle_after_s, idle_wait_ms)
    proc_fetch_request = fetcher._proc_fetch_request  # bound: the instance's own

    async def _proc_fetch_request(assignment, node_id, request):
        got = await proc_fetch_request(assignment, node_id, request)
        try:  # an error here would end aiokafka's fetch loop, and with it the worker
            wait = policy.after_fetch(bool(got))
            if wait != fetcher._fetch_max_wait_ms:  # read when the next request is built
                fetcher._fetch_max_wait_ms = wait
                gauge.set(wait)
                switches.labels(to="short" if wait == policy.short_ms else "idle").inc()
        except Exception:
            log.exception("idle fetch wait: keeping the wait as it is")
        return got

    fetcher._proc_fetch_request = _proc_fetch_request
    return policy


def _short_fetch_wait(original):
    def _create_worker_consumer(self, transport):
        from infra.kafka import FETCH_MAX_WAIT_MS

        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
        idle_after_s, idle_wait_ms = _idle_fetch
        start = consumer.start

        async def start_adapted() -> None:
            await start()  # creates consumer._fetcher
            adapt_fetch_wait(consumer, idle_after_s, idle_wait_ms)

        consumer.start = start_adapted
        return consumer

    return _create_worker_consumer


# ---- 2. in-order delivery ------------------------------------------------------------------------


def _may_rewind(rewinds: dict, tp, offset: int) -> bool:
    """At most MAX_REWINDS seeks back to one offset: a genuine gap (or a log whose start moved
    past it) must not make the consumer go round for ever."""
    key = (tp, offset)
    rewinds[key] = rewinds.get(key, 0) + 1
    if rewinds[key] > MAX_REWINDS:
        GUARD_FIRINGS.labels(guard="gap_let_through").inc()
        return False
    return True


# ---- 2. and 3.: the patched methods --------------------------------------------------------------

_dropped: dict = {}  # partition -> lowest offset thrown away by a queue clear
_original_getmany = None  # Faust's, called by the patched one (module-level for the tests)


def _next_offsets(consumer) -> dict:
    """Per partition, the offset of the next record the streams must see (None: unknown)."""
    table = getattr(consumer, "_reviewbus_next", None)
    if table is None:
        table = consumer._reviewbus_next = {}
        consumer._reviewbus_rewinds = {}
    return table


def fetch_position(consumer, tp) -> int | None:
    """Where the aiokafka consumer under Faust will fetch `tp` next (None: unknown, or not
    the aiokafka transport)."""
    from aiokafka import TopicPartition

    try:
        client = consumer._thread._ensure_consumer()
        state = client._subscription.subscription.assignment.state_value(
            TopicPartition(tp.topic, tp.partition))
        return state._position if state is not None else None
    except Exception:  # noqa: BLE001 - a private API: without it the guard only loses a check
        return None


def _clear(original):
    def clear(self) -> None:
        for queue in list(self._queues):
            for tp, offset in lowest_offsets(list(getattr(queue, "_queue", ()))).items():
                _dropped[tp] = min(offset, _dropped.get(tp, offset))
        original(self)

    return clear


def _seek(original):
    async def seek(self, partition, offset: int) -> None:
        await original(self, partition, offset)
        _next_offsets(self)[partition] = offset

    return seek


def _seek_to_committed(original):
    async def seek_to_committed(self):
        committed = await original(self)
        table = _next_offsets(self)
        for tp in committed:
            table.pop(tp, None)
        table.update(expected_after_seek(committed))
        # Nothing committed: the position is the start of the log ("earliest"), and records
        # fetched before a new generation must be read again from there like any others.
        fresh = [tp for tp, off in committed.items()
                 if (off is None or off < 0) and not faust_internal(tp.topic)]
        if fresh:
            try:
                starts = await self.earliest_offsets(*fresh)
            except Exception:  # noqa: BLE001 - the guard then only watches these from a record on
                log.warning("cannot read the start offsets of %d partitions", len(fresh),
                            exc_info=True)
                starts = {}
            table.update({tp: off for tp, off in starts.items()
                          if isinstance(off, int) and off >= 0})
        return committed

    return seek_to_committed


def _in_order_getmany(original):
    global _original_getmany
    _original_getmany = original

    async def getmany(self, timeout: float) -> AsyncIterator:
        table = _next_offsets(self)
        rewinds = self._reviewbus_rewinds
        if _dropped:
            due = rewinds_due(_dropped, table)
            _dropped.clear()
            assigned = self.assignment()
            for tp, offset in sorted(due.items()):
                if tp in assigned:
                    log.warning("%s: records from offset %d were dropped from a stream queue "
                                "unprocessed: re-reading from there", tp, offset)
                    GUARD_FIRINGS.labels(guard="queue_cleared").inc()
                    await self.seek(tp, offset)
        for tp in sorted(self.assignment()):
            if faust_internal(tp.topic):
                continue
            position = fetch_position(self, tp)
            if passed_unseen(position, table.get(tp)) and _may_rewind(rewinds, tp, table[tp]):
                log.warning("%s: the consumer is at offset %d but the streams were handed "
                            "records up to %d only: re-reading from there", tp, position,
                            table[tp])
                GUARD_FIRINGS.labels(guard="position_ahead").inc()
                await self.seek(tp, table[tp])
        rewound = set()
        async for tp, message in _original_getmany(self, timeout):
            if tp in rewound:
                continue
            expected = table.get(tp)
            if (is_skip(expected, message.offset) and not faust_internal(tp.topic)
                    and _may_rewind(rewinds, tp, expected)):
                rewound.add(tp)
                log.warning("consumer got %s offset %d where %d was next: re-reading from "
                            "%d instead of skipping", tp, message.offset, expected, expected)
                GUARD_FIRINGS.labels(guard="skip_ahead").inc()
                await self.seek(tp, expected)
                continue
            if expected is None or message.offset >= expected:
                table[tp] = message.offset + 1
            yield tp, message

    return getmany


# ---- 4. the revocation's wait for acks ------------------------------------------------------


def _bounded_wait_empty(original):
    # Faust's own loop (Consumer.wait_empty) cannot be cut from outside: its _wait_for_ack
    # swallows CancelledError. This is that loop with a deadline; `original` is not called.
    async def _consumer_wait_empty(self, consumer, logger) -> None:
        if not self.conf.stream_wait_empty:
            return
        logger.info("Wait for streams...")
        deadline = asyncio.get_running_loop().time() + REBALANCE_WAIT_EMPTY_S
        while not consumer.should_stop:
            consumer._clean_unacked_messages()
            unacked = consumer._unacked_messages
            if not unacked:
                break
            if asyncio.get_running_loop().time() >= deadline:
                stuck = sorted((m.tp.topic, m.tp.partition, m.offset) for m in list(unacked))
                unacked.clear()
                GUARD_FIRINGS.labels(guard="wait_empty_timeout").inc()
                log.warning("rebalance: %d records taken by the streams were not acked within "
                            "%g s (first: %s); not waiting for them: they are not committed, "
                            "whoever owns their partitions next reads them again",
                            len(stuck), REBALANCE_WAIT_EMPTY_S, stuck[:3])
                break
            await consumer._wait_for_ack(timeout=0.2)  # Faust waits at most 1 s in there
        await consumer.commit_and_end_transactions()

    return _consumer_wait_empty


__all__ = ["FETCH_WAIT_MS", "FETCH_WAIT_SWITCHES", "GUARD_FIRINGS", "MAX_REWINDS",
           "FaustIncompatible", "IdleFetchWait", "adapt_fetch_wait", "aiokafka_producer",
           "expected_after_seek", "idle_fetch_wait_ms", "install", "is_skip", "lowest_offsets",
           "rewinds_due", "self_check"]
