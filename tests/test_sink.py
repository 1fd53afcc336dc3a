"""The sink's consumer group of its own (streams/group_consumer.py) on the embedded broker: how
a batch is gathered, that a commit after a rebalance is refused and the records are read
again (at-least-once), that the pipelined insert never lets a later batch commit past a
failed one; and, through a real worker, that an unreadable event on a stored topic becomes a
dead letter while the events around it are stored and committed."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from agents.settings import Settings
from infra.kafka import ensure_topics, produce_all, start_group_consumer, start_producer, stop_consumer
from schemas import Feedback
from streams import names
from streams.flows.sink import parse, parse_records
from streams.group_consumer import FEED_CHUNK, OneInFlight, commit, consume, take
from streams.metrics import GROUP_COMMITS_REFUSED

from .conftest import group_settings, make_stack

pytestmark = pytest.mark.integration



async def _topic(settings: Settings, broker: str, n: int, partitions: int = 2) -> str:
    topic = f"sink-test-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, broker, {topic: partitions})
    producer = await start_producer(settings, broker)
    try:
        await produce_all(producer, topic, ((str(i % partitions).encode(), f"v{i}".encode())
                                            for i in range(n)))
    finally:
        await producer.stop()
    return topic


def test_take_gathers_up_to_max_records_within_the_window_from_the_first(broker, tmp_path):
    settings = group_settings(tmp_path)

    async def run() -> tuple[int, int, float, bool]:
        topic = await _topic(settings, broker, 30)
        consumer = await start_group_consumer(settings, broker, f"g-{uuid.uuid4().hex[:6]}",
                                              [topic])
        try:
            first = await take(consumer, 10, within_s=30.0)  # full long before the window ends
            start = time.monotonic()
            rest = await take(consumer, 1000, within_s=0.5)  # the window ends it
            waited = time.monotonic() - start
            try:  # nothing left: it waits for a first record, however long
                await asyncio.wait_for(take(consumer, 10, within_s=0.1), timeout=1.0)
                idle_returned = True
            except TimeoutError:
                idle_returned = False
            return (sum(map(len, first.values())), sum(map(len, rest.values())), waited,
                    idle_returned)
        finally:
            await stop_consumer(consumer)

    first, rest, waited, idle_returned = asyncio.run(run())
    assert (first, rest) == (10, 20)
    assert 0.4 <= waited < 5.0
    assert not idle_returned


def test_take_closes_a_batch_once_the_bus_went_quiet_for_idle_s(broker, tmp_path):
    """idle_s: the records that came are handed on idle_s after the last one, long before the
    window ends; records that keep coming faster than idle_s keep the batch open."""
    settings = group_settings(tmp_path)

    async def run() -> tuple[int, float, int, int]:
        topic = await _topic(settings, broker, 5)
        consumer = await start_group_consumer(settings, broker, f"g-{uuid.uuid4().hex[:6]}",
                                              [topic])
        producer = await start_producer(settings, broker)
        try:
            start = time.monotonic()
            quiet = await take(consumer, 1000, within_s=60.0, idle_s=0.3)
            waited = time.monotonic() - start

            async def trickle() -> None:  # one record every 0.1 s for ~1.5 s
                for i in range(15):
                    await producer.send_and_wait(topic, f"t{i}".encode())
                    await asyncio.sleep(0.1)

            sending = asyncio.ensure_future(trickle())
            steady = await take(consumer, 1000, within_s=60.0, idle_s=0.6)
            await sending
            got = sum(map(len, steady.values()))
            rest = await take(consumer, 1000, within_s=60.0, idle_s=0.6) if got < 15 else {}
            return sum(map(len, quiet.values())), waited, got, sum(map(len, rest.values()))
        finally:
            await producer.stop()
            await stop_consumer(consumer)

    quiet, waited, steady, rest = asyncio.run(run())
    assert quiet == 5 and waited < 10.0  # not the 60 s window
    # Gaps of ~0.1 s never reach idle_s: the trickle stays one batch (a stall of the loaded
    # machine may close it early, never before most of it came).
    assert steady + rest == 15 and steady >= 10


def test_consume_hands_on_a_batch_once_the_bus_went_quiet(broker, tmp_path):
    """The wiring the sink uses: consume(..., idle_s=) passes idle_s to every take, so five
    records reach `process` long before the 30 s window would end."""
    settings = group_settings(tmp_path)

    async def run() -> list[int]:
        topic = await _topic(settings, broker, 5)
        seen: list[int] = []
        handed = asyncio.Event()

        class Values(list):
            def add(self, records) -> None:
                self.extend(r.value for r in records)

        async def process(consumer, batch, gathered) -> None:
            seen.append(sum(map(len, batch.values())))
            # the gatherer of this batch was fed exactly its records
            assert sorted(gathered) == sorted(r.value for rs in batch.values() for r in rs)
            handed.set()

        task = asyncio.ensure_future(consume(
            settings, broker, "test", f"g-{uuid.uuid4().hex[:6]}", [topic], process,
            max_records=1000, within_s=30.0, idle_s=0.2, joined=asyncio.Event(),
            gather=Values))
        try:
            await asyncio.wait_for(handed.wait(), timeout=15.0)
            return seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert asyncio.run(run()) == [5]


def test_take_feeds_records_in_chunks_with_a_loop_turn_after_each(broker, tmp_path):
    """A backlog is fed FEED_CHUNK records at a time, and other tasks run between chunks: a
    hop parsing its batch in `feed` never holds the event loop for the whole batch."""
    settings = group_settings(tmp_path)
    n = 3 * FEED_CHUNK + 7

    async def run() -> tuple[list[int], list[bytes], int, list[int]]:
        topic = await _topic(settings, broker, n, partitions=1)
        consumer = await start_group_consumer(settings, broker, f"g-{uuid.uuid4().hex[:6]}",
                                              [topic])
        chunks: list[int] = []
        fed: list[bytes] = []
        ticks_at_feed: list[int] = []
        ticks = 0

        def feed(records) -> None:
            chunks.append(len(records))
            fed.extend(r.value for r in records)
            ticks_at_feed.append(ticks)

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        try:
            await take(consumer, 1, within_s=30.0)  # joined and fetching: the backlog is there
            ticking = asyncio.ensure_future(ticker())
            try:
                batch = await take(consumer, 10 * n, within_s=3.0, idle_s=0.5, feed=feed)
            finally:
                ticking.cancel()
            return chunks, fed, sum(map(len, batch.values())), ticks_at_feed
        finally:
            await stop_consumer(consumer)

    chunks, fed, taken, ticks_at_feed = asyncio.run(run())
    assert taken == n - 1 and sum(chunks) == n - 1
    assert max(chunks) <= FEED_CHUNK and len(chunks) >= 4
    assert fed == [f"v{i}".encode() for i in range(1, n)]  # each once, in order
    # the ticker ran between every two chunks
    assert all(b > a for a, b in zip(ticks_at_feed, ticks_at_feed[1:], strict=False))


def test_a_busy_loop_is_not_taken_for_a_quiet_bus(broker, tmp_path):
    """The worker's agents can hold the event loop past idle_s while records wait in the
    socket: that is load, and the batch stays open for its window."""
    settings = group_settings(tmp_path)

    async def run() -> tuple[int, int, float]:
        topic = await _topic(settings, broker, 1)
        consumer = await start_group_consumer(settings, broker, f"g-{uuid.uuid4().hex[:6]}",
                                              [topic])
        sent, stop = [0], threading.Event()

        def produce() -> None:  # its own loop in a thread, ~1,000 records/s, never stalled
            async def go() -> None:
                producer = await start_producer(settings, broker)
                try:
                    while not stop.is_set():
                        await asyncio.gather(*[await producer.send(topic, b"x" * 300)
                                               for _ in range(10)])
                        sent[0] += 10
                        await asyncio.sleep(0.01)
                finally:
                    await producer.stop()
            asyncio.run(go())

        async def hog() -> None:  # CPU-bound work holding the loop for 0.4 s at a time
            while not stop.is_set():
                time.sleep(0.4)
                await asyncio.sleep(0.005)

        try:
            await take(consumer, 10, within_s=0.1)  # joined, at the first record
            thread = threading.Thread(target=produce)
            thread.start()
            await asyncio.sleep(0.3)
            busy = asyncio.ensure_future(hog())
            start = time.monotonic()
            batch = await take(consumer, 1_000_000, within_s=2.0, idle_s=0.2)
            took, at_return = time.monotonic() - start, sent[0]
            stop.set()
            await busy
            await asyncio.to_thread(thread.join)
            return sum(map(len, batch.values())), at_return, took
        finally:
            stop.set()
            await stop_consumer(consumer)

    got, sent, took = asyncio.run(run())
    # Closed at the first late poll, the batch held what came in ~0.4 s (a fifth of it).
    assert took >= 1.5 and got >= 0.5 * sent, (got, sent, took)


def test_a_commit_after_a_rebalance_is_refused_and_the_batch_is_read_again(broker, tmp_path):
    settings = group_settings(tmp_path)

    async def run() -> tuple[bool, bool, int, list[bytes]]:
        topic = await _topic(settings, broker, 20)
        group = f"g-{uuid.uuid4().hex[:6]}"
        a = await start_group_consumer(settings, broker, group, [topic])
        b = None
        try:
            batch = await take(a, 100, within_s=0.5)
            assert sum(map(len, batch.values())) == 20
            refused_before = GROUP_COMMITS_REFUSED.labels(agent="sink")._value.get()
            b = await start_group_consumer(settings, broker, group, [topic])
            deadline = time.monotonic() + 30
            while len(a.assignment()) != 1 or len(b.assignment()) != 1:  # both polled: rejoin
                assert time.monotonic() < deadline, "the group did not rebalance"
                await asyncio.gather(a.getmany(timeout_ms=200), b.getmany(timeout_ms=200))
            committed = await commit(a, batch, "sink")  # one of its two partitions is b's now
            refused = GROUP_COMMITS_REFUSED.labels(agent="sink")._value.get() - refused_before
            again = await take(b, 100, within_s=0.5)  # b starts where nobody committed
            kept = await commit(b, again, "sink")
            values = sorted(r.value for records in again.values() for r in records)
            return committed, kept, int(refused), values
        finally:
            await stop_consumer(a)
            if b is not None:
                await stop_consumer(b)

    committed, kept, refused, values = asyncio.run(run())
    assert not committed and refused == 1
    assert kept
    assert len(values) == 10 and all(v.startswith(b"v") for v in values)


def test_parse_records_sorts_unreadable_records_out_with_their_reason():
    from aiokafka import ConsumerRecord

    settings = Settings()
    fb = names.topic(settings, "feedback")
    good = Feedback(fingerprint="f1", verdict="false_positive", actor="me")

    def record(offset: int, value: bytes) -> ConsumerRecord:
        return ConsumerRecord(topic=fb, partition=0, offset=offset, timestamp=0,
                              timestamp_type=0, key=b"k", value=value, checksum=None,
                              serialized_key_size=1, serialized_value_size=len(value),
                              headers=())

    types = {fb: Feedback}
    rows, stored, letters = parse_records(
        types, [record(0, good.model_dump_json().encode()), record(1, b"{not json"),
                record(2, b'{"event_id": "x"}')])
    assert rows.tables["feedback"]["fingerprint"] == ["f1"]
    assert rows.keys == [("Feedback", good.event_id)]
    assert [r.offset for r in stored] == [0]
    assert rows.sources == [("Feedback", good.model_dump_json().encode())]
    assert [(r.offset, why.split(":")[0]) for r, why in letters] == [
        (1, f"unreadable {fb} event"), (2, f"unreadable {fb} event")]
    with pytest.raises(KeyError):
        parse(types, "elsewhere", b"{}")


def test_the_worker_dead_letters_an_unreadable_stored_event_and_stores_the_rest(
        tmp_path_factory, broker):
    stack = make_stack(tmp_path_factory, broker, {
        "task": "code-review", "rotation": {"interval_s": 3600},
        "versions": [{"id": "st", "backend": "fake", "initial_state": "stable"}]}, "sink")
    try:
        s = stack.settings
        good = [Feedback(fingerprint=f"f{i}", verdict="false_positive", actor="me")
                for i in range(3)]

        async def publish() -> None:
            producer = await start_producer(s, s.kafka)
            try:
                values = [good[0].model_dump_json().encode(), b"\xff not an event",
                          *(g.model_dump_json().encode() for g in good[1:])]
                await produce_all(producer, names.topic(s, "feedback"),
                                  ((b"k", v) for v in values))
            finally:
                await producer.stop()

        asyncio.run(publish())
        stack.wait_for("SELECT count() AS n FROM feedback FINAL", lambda r: r[0]["n"] == 3)
        letters = stack.wait_for(
            "SELECT source_topic, error, payload FROM dead_letters FINAL",
            lambda r: len(r) == 1)
        assert letters[0]["source_topic"] == names.topic(s, "feedback")
        assert letters[0]["error"].startswith(f"sink: unreadable {names.topic(s, 'feedback')}")
        assert letters[0]["payload"]  # the raw bytes kept, for replay by hand
        # Everything stored is committed by the sink's own group.
        lag = asyncio.run(_sink_lag(s))
        assert lag == 0
    finally:
        stack.stop()


async def _sink_lag(settings: Settings) -> int:
    from infra.kafka import consumer_lag

    deadline = time.monotonic() + 30
    while True:
        lag = await consumer_lag(settings, settings.kafka, names.sink_group(settings),
                                 [names.topic(settings, "feedback")], settings.partitions)
        if sum(lag.values()) == 0 or time.monotonic() > deadline:
            return sum(lag.values())
        await asyncio.sleep(0.3)


def test_the_sink_stores_every_topic_but_the_users_findings():
    from streams.flows.sink import EVENT_TYPES, HEALING

    settings = Settings()
    stored = set(names.sink_topics(settings))
    assert stored == {names.topic(settings, t) for t in (*EVENT_TYPES, HEALING)}
    # Not the inputs (intake archives what it accepts), not the inference requests, not the
    # users' findings.
    everything = set(names.all_topics(settings, []))
    assert stored == everything - {
        names.topic(settings, "findings"), *(names.topic(settings, t) for t in names.INPUT_KINDS),
        *(t for t in everything if t.startswith(names.topic(settings, "inference.")))}


def test_one_stage_in_flight_in_order_and_a_failure_stops_the_later_ones():
    log: list[str] = []

    async def stage(name: str, fail: bool = False, wait: float = 0.05) -> None:
        log.append(f"start {name}")
        await asyncio.sleep(wait)
        if fail:
            raise RuntimeError(f"{name} failed")
        log.append(f"commit {name}")

    async def run() -> tuple[str, str]:
        pending = OneInFlight()
        await pending.submit(stage("a"))
        await pending.submit(stage("b", fail=True))  # waits for a, then starts b
        await asyncio.sleep(0)
        assert log == ["start a", "commit a", "start b"]
        with pytest.raises(RuntimeError) as failed:  # c never starts: b's batch is read again
            await pending.submit(stage("c"))
        await pending.submit(stage("d", fail=True, wait=0.0))
        await asyncio.sleep(0.05)
        with pytest.raises(RuntimeError) as checked:  # take() finds it while the bus is quiet
            pending.check()
        pending.check()  # raised once; nothing in flight now
        await pending.submit(stage("e", wait=10.0))
        await asyncio.sleep(0)
        await pending.cancel()  # stopping: e's batch is not committed
        return str(failed.value), str(checked.value)

    failed, checked = asyncio.run(run())
    assert (failed, checked) == ("b failed", "d failed")
    assert log == ["start a", "commit a", "start b", "start d", "start e"]


def test_take_calls_its_check_while_waiting_for_a_first_record(broker, tmp_path):
    settings = group_settings(tmp_path)

    async def run() -> int:
        topic = await _topic(settings, broker, 0)
        consumer = await start_group_consumer(settings, broker, f"g-{uuid.uuid4().hex[:6]}",
                                              [topic])
        calls = 0

        def check() -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("the insert in flight failed")

        try:
            with pytest.raises(RuntimeError, match="in flight failed"):
                await asyncio.wait_for(take(consumer, 10, within_s=0.1, check=check), 10)
            return calls
        finally:
            await stop_consumer(consumer)

    assert asyncio.run(run()) == 3


def test_the_repair_waits_for_answers_the_sink_has_not_stored(broker, tmp_path):
    """healing's backlog counts the sink group's lag on `results` (and `accepted`): an answer
    not stored yet makes its request look unserved, and routing it again would only repeat
    the inference."""
    from types import SimpleNamespace

    from aiokafka import TopicPartition

    from streams.flows.healing import backlog

    settings = group_settings(tmp_path).model_copy(update={"topic_prefix": f"bl{uuid.uuid4().hex[:6]}.",
                                                      "partitions": 2})
    ctx = SimpleNamespace(settings=settings, bootstrap=broker, topics=SimpleNamespace(inference={}),
                          app=SimpleNamespace(conf=SimpleNamespace(id=settings.resolved_app_id())))

    async def run() -> list[int]:
        await ensure_topics(settings, broker, names.all_topics(settings, []))
        results = names.topic(settings, "results")
        producer = await start_producer(settings, broker)
        try:
            await produce_all(producer, results, ((b"k", b"{}") for _ in range(3)))
        finally:
            await producer.stop()
        seen = [await backlog(ctx)]  # nobody committed: the hops group's lag and the sink's
        for group in (names.hops_group(settings), names.sink_group(settings)):
            consumer = await start_group_consumer(settings, broker, group, [results])
            try:
                got = await take(consumer, 3, within_s=2.0)
                assert sum(map(len, got.values())) == 3
                await consumer.commit({TopicPartition(tp.topic, tp.partition): r[-1].offset + 1
                                       for tp, r in got.items()})
            finally:
                await stop_consumer(consumer)
            seen.append(await backlog(ctx))
        return seen

    assert asyncio.run(run()) == [6, 3, 0]


def test_a_batch_the_store_rejects_for_its_data_is_split_to_dead_letter_only_the_bad_event(
        monkeypatch):
    """The columns path fails as a whole; the sink parses the batch again (a loop turn every
    FEED_CHUNK records: 2 here) and halves it until the event the store refuses alone is found:
    that one is dead-lettered with its own record, the others stored. (The store here refuses
    any insert holding fingerprint `bad`.)"""
    from types import SimpleNamespace

    from streams.flows import sink

    monkeypatch.setattr(sink, "FEED_CHUNK", 2)

    from aiokafka import ConsumerRecord

    from agents.errors import StoreError
    from streams.flows.sink import store_parsed

    settings = Settings()
    fb = names.topic(settings, "feedback")
    events = [Feedback(fingerprint=f, verdict="false_positive", actor="me")
              for f in ("f0", "f1", "bad", "f3")]
    records = [ConsumerRecord(topic=fb, partition=0, offset=i, timestamp=0, timestamp_type=0,
                              key=b"k", value=e.model_dump_json().encode(), checksum=None,
                              serialized_key_size=1, serialized_value_size=1, headers=())
               for i, e in enumerate(events)]
    stored: list[str] = []
    letters: list[tuple[int, str]] = []

    class Store:
        async def insert_event_rows(self, rows):
            raise StoreError("Cannot parse input: the row of bad")

        async def insert_events(self, batch):
            if any(e.fingerprint == "bad" for e in batch):
                raise StoreError("Cannot parse input: the row of bad")
            stored.extend(e.fingerprint for e in batch)
            return len(batch)

    async def dead_letter_messages(items, agent):
        letters.extend((record.offset, why) for record, why in items)

    ctx = SimpleNamespace(store=Store(), dead_letter_messages=dead_letter_messages)
    rows, kept, unreadable = parse_records({fb: Feedback}, records)
    assert asyncio.run(store_parsed(ctx, {fb: Feedback}, rows, kept, unreadable)) == 4
    assert sorted(stored) == ["f0", "f1", "f3"]
    assert letters == [(2, "store rejected the row")]
