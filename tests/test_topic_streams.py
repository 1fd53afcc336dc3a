"""The hops' own consumer (streams/topic_streams.py) on the embedded broker: it commits only
below the first record a hop has not acked, a hop that restarts reads its unacked records
again, a full stream pauses its topic until the hop catches up, a revoked partition's records
are dropped and its late acks ignored, and the first assignment starts where the Faust group
left off."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.kafka import (
    client_kwargs,
    ensure_topics,
    produce_all,
    start_group_consumer,
    start_producer,
    stop_consumer,
)
from streams.topic_streams import HopsListener, TopicStreams

from .conftest import group_settings

pytestmark = pytest.mark.integration



async def _topic_with(settings, broker: str, n: int, partitions: int = 1) -> str:
    topic = f"hops-test-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, broker, {topic: partitions})
    await _produce(settings, broker, topic, range(n))
    return topic


@contextlib.asynccontextmanager
async def _running(settings, broker: str, topic: str, hub: TopicStreams,
                   from_group: str | None = None):
    """The hub's consumer in a group of its own over `topic`, run as the hops task runs it."""
    group = f"g-{uuid.uuid4().hex[:6]}"
    listener = HopsListener(hub, "hops-test", asyncio.Event(), settings, broker,
                            from_group or f"nobody-{uuid.uuid4().hex[:6]}")
    consumer = await start_group_consumer(settings, broker, group, [topic], listener)
    listener.attach(consumer)
    await asyncio.wait_for(listener.carried.wait(), 30)
    task = asyncio.ensure_future(hub.run(consumer, timeout_ms=200, check=listener.check))
    try:
        yield consumer, group
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stop_consumer(consumer)


async def _committed(settings, broker: str, group: str, tp: TopicPartition) -> int | None:
    reader = AIOKafkaConsumer(**client_kwargs(settings, broker), group_id=group,
                              enable_auto_commit=False)
    await reader.start()
    try:
        return await reader.committed(tp)
    finally:
        await stop_consumer(reader)


async def _take(stream, n: int, within: float = 0.5) -> list:
    takes = stream.noack_take(n, within=within)
    try:
        return await asyncio.wait_for(takes.__anext__(), 30)
    finally:
        await takes.aclose()


async def _take_and_ack(stream, n: int, size: int) -> list[int]:
    """Take batches of at most `size` and ack each, as a hop does, until `n` records came;
    their offsets."""
    seen: list[int] = []
    while len(seen) < n:
        batch = await _take(stream, size, within=0.05)
        seen += [e.offset for e in batch]
        for event in batch:
            await stream.ack(event)
    return seen


async def _until(predicate, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _produce(settings, broker: str, topic: str, numbers) -> None:
    producer = await start_producer(settings, broker)
    try:
        await produce_all(producer, topic, ((b"k", f"v{i}".encode()) for i in numbers))
    finally:
        await producer.stop()


async def _committed_soon(settings, broker: str, group: str, tp: TopicPartition,
                          expected: int, timeout: float = 10.0) -> int | None:
    """The group's committed offset once it is `expected` (or whatever it is at the end)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await _committed(settings, broker, group, tp)
        if got == expected or loop.time() >= deadline:
            return got
        await asyncio.sleep(0.2)


def test_commits_stop_below_the_first_unacked_record(broker, tmp_path):
    settings = group_settings(tmp_path)

    async def run() -> tuple[list[int], int | None, int | None]:
        topic = await _topic_with(settings, broker, 10)
        tp = TopicPartition(topic, 0)
        hub = TopicStreams("hops-test", commit_interval_s=0.1)
        stream = hub.stream(topic)
        async with _running(settings, broker, topic, hub) as (_, group):
            batch = await _take(stream, 10)
            for event in batch:
                if event.offset != 5:
                    await stream.ack(event)
            await asyncio.sleep(0.8)  # a few commit intervals: 5 is committed at once...
            before = await _committed_soon(settings, broker, group, tp, 5)
            await asyncio.sleep(0.5)  # ...and nothing past it however long it waits
            still = await _committed(settings, broker, group, tp)
            assert still == before
            await stream.ack(batch[5])
            after = await _committed_soon(settings, broker, group, tp, 10)
        return [e.offset for e in batch], before, after

    offsets, before, after = asyncio.run(run())
    assert offsets == list(range(10))
    assert before == 5  # 6..9 were acked, 5 was not: nothing above it is committed
    assert after == 10


def test_a_hop_that_restarts_reads_what_it_did_not_ack_again(broker, tmp_path):
    settings = group_settings(tmp_path)

    async def run() -> tuple[list[int], list[int]]:
        topic = await _topic_with(settings, broker, 8)
        hub = TopicStreams("hops-test", commit_interval_s=0.1)
        stream = hub.stream(topic)
        async with _running(settings, broker, topic, hub):
            first = await _take(stream, 8)
            for event in first[:3]:
                await stream.ack(event)
            stream.rewind()  # the hop died holding offsets 3..7 and starts again
            again = await _take(stream, 8)
        return [e.offset for e in first], [e.offset for e in again]

    first, again = asyncio.run(run())
    assert first == list(range(8))
    assert again == [3, 4, 5, 6, 7]


def test_a_full_stream_pauses_its_topic_until_the_hop_takes_and_loses_nothing(broker, tmp_path):
    """Over `buffer` records held: the topic is paused (records produced meanwhile stay in
    Kafka), and resumed once the hop took them; every record comes once, in order."""
    settings = group_settings(tmp_path)

    async def run() -> tuple[int, int, list[int], bool]:
        topic = await _topic_with(settings, broker, 60)
        tp = TopicPartition(topic, 0)
        hub = TopicStreams("hops-test", buffer=10)
        stream = hub.stream(topic)
        async with _running(settings, broker, topic, hub) as (consumer, _):
            await _until(lambda: tp in consumer.paused())
            held = len(stream.buffer)
            await _produce(settings, broker, topic, range(60, 120))
            await asyncio.sleep(1.0)  # paused: none of these is fetched
            held_later = len(stream.buffer)
            seen = await _take_and_ack(stream, 120, 4)
            resumed = tp not in consumer.paused()
        return held, held_later, seen, resumed

    held, held_later, seen, resumed = asyncio.run(run())
    assert held > 10 and held_later == held
    assert seen == list(range(120))  # in order, none lost, none twice
    assert resumed


def test_a_hop_that_restarts_while_its_topic_is_paused_gets_its_records(broker, tmp_path):
    """A rewind empties a full stream; the topic is resumed, else nothing would ever refill it
    (the hop would wait for good)."""
    settings = group_settings(tmp_path)

    async def run() -> list[int]:
        topic = await _topic_with(settings, broker, 40)
        tp = TopicPartition(topic, 0)
        hub = TopicStreams("hops-test", buffer=10)
        stream = hub.stream(topic)
        async with _running(settings, broker, topic, hub) as (consumer, _):
            await _until(lambda: tp in consumer.paused())
            first = await _take(stream, 5)
            stream.rewind()  # the hop died holding 0..4, its topic paused
            seen = await _take_and_ack(stream, 40, 8)
        return [e.offset for e in first] + seen

    offsets = asyncio.run(run())
    assert offsets == list(range(5)) + list(range(40))


def test_a_first_carry_that_fails_is_raised_not_waited_for(broker, tmp_path):
    """The Faust group's offsets cannot be read: the task raises (and restarts) instead of
    waiting for good with its partitions paused."""
    settings = group_settings(tmp_path)

    async def run() -> BaseException | None:
        topic = await _topic_with(settings, broker, 3)
        hub = TopicStreams("hops-test")
        hub.stream(topic)
        listener = HopsListener(hub, "hops-test", asyncio.Event(), settings, "127.0.0.1:1",
                                "app-nowhere")
        consumer = await start_group_consumer(settings, broker, f"g-{uuid.uuid4().hex[:6]}",
                                              [topic], listener)
        listener.attach(consumer)
        try:
            await asyncio.wait_for(listener.wait_carried(), 60)
        except Exception as exc:  # noqa: BLE001 - what the test looks at
            return exc
        finally:
            await stop_consumer(consumer)
        return None

    failure = asyncio.run(run())
    assert failure is not None and not isinstance(failure, TimeoutError), failure


def test_a_revoked_partition_is_dropped_and_its_late_acks_ignored(broker, tmp_path):
    settings = group_settings(tmp_path)

    async def run() -> tuple[int, int | None, int | None]:
        topic = await _topic_with(settings, broker, 6)
        tp = TopicPartition(topic, 0)
        hub = TopicStreams("hops-test", commit_interval_s=0.1)
        stream = hub.stream(topic)
        async with _running(settings, broker, topic, hub) as (_, group):
            batch = await _take(stream, 2)  # 0, 1 handed out; 2..5 stay buffered
            for _ in range(100):
                if len(stream.buffer) >= 4:
                    break
                await asyncio.sleep(0.05)
            await stream.ack(batch[0])
            await hub.commit([tp])
            committed_at_revoke = await _committed(settings, broker, group, tp)
            hub.revoked({tp})
            left = len(stream.buffer)
            await stream.ack(batch[1])  # acked after its partition was revoked: ignored
            await hub.commit()
            later = await _committed(settings, broker, group, tp)
        return left, committed_at_revoke, later

    left, at_revoke, later = asyncio.run(run())
    assert left == 0
    assert at_revoke == 1 and later == 1


def test_the_first_assignment_starts_where_the_faust_group_left_off(broker, tmp_path):
    settings = group_settings(tmp_path)

    async def run() -> tuple[list[int], int | None]:
        topic = await _topic_with(settings, broker, 12)
        tp = TopicPartition(topic, 0)
        faust_group = f"app-{uuid.uuid4().hex[:6]}"
        old = AIOKafkaConsumer(**client_kwargs(settings, broker), group_id=faust_group,
                               enable_auto_commit=False)
        await old.start()
        old.assign([tp])
        await old.commit({tp: 9})
        await stop_consumer(old)
        hub = TopicStreams("hops-test")
        stream = hub.stream(topic)
        async with _running(settings, broker, topic, hub, from_group=faust_group) as (_, group):
            batch = await _take(stream, 12)
            committed = await _committed(settings, broker, group, tp)
        return [e.offset for e in batch], committed

    offsets, committed = asyncio.run(run())
    assert offsets == [9, 10, 11]
    assert committed == 9


def test_a_rebalance_lets_the_batch_in_flight_be_acked_then_commits_it(broker, tmp_path):
    """Through the listener, on a real rebalance (a second member joins): the records not
    handed out are dropped at once, the batch in flight gets its moment to be acked (here 0.2 s
    after the revocation began) and its offsets are committed before the partition moves."""
    settings = group_settings(tmp_path)

    async def run() -> int | None:
        topic = await _topic_with(settings, broker, 10)
        tp = TopicPartition(topic, 0)
        hub = TopicStreams("hops-test", commit_interval_s=60.0)  # only the revocation commits
        stream = hub.stream(topic)
        async with _running(settings, broker, topic, hub) as (_, group):
            batch = await _take(stream, 4)
            drop = hub.drop_buffered

            def drop_then_ack_soon(revoked):
                drop(revoked)
                asyncio.get_running_loop().call_later(0.2, lambda: [hub.acked(e) for e in batch])

            hub.drop_buffered = drop_then_ack_soon  # type: ignore[method-assign]
            other = await start_group_consumer(settings, broker, group, [topic])
            try:
                await asyncio.wait_for(other.getmany(timeout_ms=100), 30)
                committed = await _committed_soon(settings, broker, group, tp, 4, timeout=30)
            finally:
                await stop_consumer(other)
        return committed

    assert asyncio.run(run()) == 4


def test_a_lone_record_waits_for_the_end_of_its_window_not_a_whole_window():
    """Windows on a fixed grid, as Faust's take closes them: a record that comes 0.6 s into a
    1 s window is handed out at its end, about 0.4 s later (a whole window would be 1 s)."""
    from types import SimpleNamespace

    async def run() -> float:
        hub = TopicStreams("hops-test")
        stream = hub.stream("t")
        loop = asyncio.get_running_loop()
        takes = stream.noack_take(10, within=1.0)
        first = asyncio.ensure_future(takes.__anext__())  # the grid starts here
        await asyncio.sleep(0.6)
        came = loop.time()
        stream.buffer.append(SimpleNamespace(topic="t", partition=0, offset=0))
        stream.arrived.set()
        batch = await asyncio.wait_for(first, 5)
        waited = loop.time() - came
        await takes.aclose()
        assert [e.offset for e in batch] == [0]
        return waited

    waited = asyncio.run(run())
    assert 0.3 <= waited < 0.8, waited
