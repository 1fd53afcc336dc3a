"""Intake's consumer group of its own (streams/flows/intake.py) on the embedded broker: its
first assignment starts where the Faust group that read the inputs before had committed, a
partition it committed itself stays where it is, and the window waits for a first record
without polling at the window's pace."""

from __future__ import annotations

import asyncio
import time
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
from streams.group_consumer import carry_offsets, take

from .conftest import group_settings

pytestmark = pytest.mark.integration



def test_the_first_assignment_starts_where_the_faust_group_left_each_partition(broker, tmp_path):
    settings = group_settings(tmp_path)
    topic = f"intake-test-{uuid.uuid4().hex[:8]}"
    old_group, new_group = f"app-{uuid.uuid4().hex[:6]}", f"app-{uuid.uuid4().hex[:6]}-intake"
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    async def run() -> tuple[dict, list[int], dict]:
        await ensure_topics(settings, broker, {topic: 2})
        producer = await start_producer(settings, broker)
        try:
            await produce_all(producer, topic, ((str(i).encode(), f"v{i}".encode())
                                                for i in range(100)))
        finally:
            await producer.stop()
        # The Faust group read partition 0 up to offset 15 and partition 1 up to 7.
        old = AIOKafkaConsumer(**client_kwargs(settings, broker), group_id=old_group,
                               enable_auto_commit=False)
        await old.start()
        old.assign([p0, p1])
        await old.commit({p0: 15, p1: 7})
        consumer = await start_group_consumer(settings, broker, new_group, [topic])
        try:
            await take(consumer, 1, within_s=15.0)  # joined; then start over, as at assignment
            await consumer.commit({p1: 12})  # this group already read partition 1 to 12
            moved = await carry_offsets(consumer, old, {p0, p1})
            batch = await take(consumer, 1000, within_s=1.0, idle_s=0.3)
            positions = {tp: await consumer.position(tp) for tp in (p0, p1)}
        finally:
            await stop_consumer(consumer)
            await stop_consumer(old)
        return moved, [r.offset for r in batch.get(p0, [])], positions

    moved, offsets, positions = asyncio.run(run())
    assert moved == {p0: 15}  # partition 1 keeps this group's own offset
    assert offsets and offsets == list(range(15, 15 + len(offsets)))  # p0 again from 15
    assert positions[p0] == 15 + len(offsets)


def test_a_short_window_waits_for_its_first_record_without_polling_at_its_pace(broker, tmp_path):
    """intake's 2 ms window with first_wait_s=1.0: a quiet topic costs one getmany a second,
    not five hundred."""
    settings = group_settings(tmp_path)
    topic = f"intake-test-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[int, float]:
        await ensure_topics(settings, broker, {topic: 1})
        consumer = await start_group_consumer(settings, broker, f"g-{uuid.uuid4().hex[:6]}",
                                              [topic])
        calls = 0
        original = consumer.getmany

        async def counted(*args, **kwargs):
            nonlocal calls
            calls += 1
            return await original(*args, **kwargs)

        consumer.getmany = counted
        try:
            task = asyncio.ensure_future(take(consumer, 10, within_s=0.002, first_wait_s=1.0))
            await asyncio.sleep(2.5)
            calls_quiet = calls
            producer = await start_producer(settings, broker)
            started = time.monotonic()
            try:
                await produce_all(producer, topic, [(b"k", b"v")])
            finally:
                await producer.stop()
            batch = await asyncio.wait_for(task, 10)
            assert sum(map(len, batch.values())) == 1
            return calls_quiet, time.monotonic() - started
        finally:
            await stop_consumer(consumer)

    calls_quiet, took = asyncio.run(run())
    assert 1 <= calls_quiet <= 5
    assert took < 3.0


def test_the_listener_carries_before_any_record_is_taken_and_commits_what_it_carried(
        broker, tmp_path):
    """Through CarryOffsets as the intake task uses it: no record below the Faust group's
    offset is ever returned (the partitions are paused while it carries), and the carried
    offset is committed in the intake group at once."""
    from streams.group_consumer import CarryOffsets

    settings = group_settings(tmp_path)
    topic = f"intake-test-{uuid.uuid4().hex[:8]}"
    app_id = f"app-{uuid.uuid4().hex[:6]}"
    tp = TopicPartition(topic, 0)

    async def run() -> tuple[list[int], int | None, bool]:
        await ensure_topics(settings, broker, {topic: 1})
        producer = await start_producer(settings, broker)
        try:
            await produce_all(producer, topic, ((b"k", f"v{i}".encode()) for i in range(30)))
        finally:
            await producer.stop()
        old = AIOKafkaConsumer(**client_kwargs(settings, broker), group_id=app_id,
                               enable_auto_commit=False)
        await old.start()
        old.assign([tp])
        await old.commit({tp: 20})
        await stop_consumer(old)
        joined = asyncio.Event()
        listener = CarryOffsets("intake", joined, settings, broker, app_id)
        consumer = await start_group_consumer(settings, broker, f"{app_id}-intake", [topic],
                                              listener)
        listener.attach(consumer)
        try:
            await asyncio.wait_for(listener.carried.wait(), 30)
            batch = await take(consumer, 1000, within_s=1.0, idle_s=0.3, check=listener.check)
            committed = await consumer.committed(tp)
        finally:
            await stop_consumer(consumer)
        return [r.offset for r in batch.get(tp, [])], committed, joined.is_set()

    offsets, committed, joined = asyncio.run(run())
    assert offsets == list(range(20, 30))
    assert committed == 20 and joined
