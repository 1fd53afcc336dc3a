"""Kafka plumbing shared by the CLI, the worker and the benchmarks (aiokafka): client options,
topics (admin), producers, tail consumers, lag.

The embedded broker's quirks are worked around in infra/tansu.py, not here: end offsets are
read through `tansu.end_offsets`, and `FETCH_MAX_WAIT_MS` comes from there (both re-exported
under their old names).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from agents.errors import BrokerUnavailable
from agents.settings import Settings

from .partitioner import KafkaPartitioner
from .tansu import FETCH_MAX_WAIT_MS, end_offsets, true_end_offsets

__all__ = ["FETCH_MAX_WAIT_MS", "client_kwargs", "consumer_lag", "end_offsets", "ensure_topics",
           "existing_topics", "produce_all", "read_to_end", "start_group_consumer", "start_producer",
           "start_tail_consumer", "stop_consumer", "true_end_offsets"]



def client_kwargs(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Connection options (address, TLS, SASL) for every aiokafka client we create."""
    kw: dict[str, Any] = {"bootstrap_servers": bootstrap.split(",")}
    protocol = settings.kafka_security_protocol.upper()
    if protocol != "PLAINTEXT":
        kw["security_protocol"] = protocol
    if "SSL" in protocol:
        ctx = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile)
                                         if settings.kafka_ssl_cafile else None)
        kw["ssl_context"] = ctx
    if "SASL" in protocol:
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            kw["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kw


@asynccontextmanager
async def _admin(settings: Settings, bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings, bootstrap))
    try:
        await admin.start()
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}") from exc
    try:
        yield admin
    finally:
        await admin.close()


async def existing_topics(settings: Settings, bootstrap: str) -> set[str]:
    async with _admin(settings, bootstrap) as admin:
        return set(await admin.list_topics())


async def ensure_topics(settings: Settings, bootstrap: str, partitions: dict[str, int]) -> list[str]:
    """Create the topics that do not exist yet, each with its explicit partition count."""
    async with _admin(settings, bootstrap) as admin:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in partitions.items() if name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
        return [t.name for t in missing]


async def start_producer(settings: Settings, bootstrap: str, **kw: Any) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(**client_kwargs(settings, bootstrap), acks="all",
                                partitioner=kw.pop("partitioner", KafkaPartitioner()),
                                linger_ms=kw.pop("linger_ms", 5),
                                max_request_size=kw.pop("max_request_size", 16_000_000), **kw)
    try:
        await producer.start()
    except (KafkaError, OSError) as exc:
        await producer.stop()
        raise BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}") from exc
    return producer


async def produce_all(producer: AIOKafkaProducer, topic: str,
                      messages: Iterable[tuple[bytes | None, bytes]],
                      progress: Callable[[int], None] | None = None) -> int:
    """Send every message and wait until the broker acknowledged all of them."""
    futures = []
    for key, value in messages:
        futures.append(await producer.send(topic, value=value, key=key))
        if progress:
            progress(1)
    await asyncio.gather(*futures)
    return len(futures)


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """consumer.stop(), also right after start(): a group-less aiokafka consumer stopped
    before its background task first ran awaits that cancelled task and raises
    CancelledError, which would hide the error being reported. Our own cancellation still
    propagates."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def start_group_consumer(settings: Settings, bootstrap: str, group: str,
                               topics: Iterable[str],
                               listener: ConsumerRebalanceListener | None = None,
                               fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
                               max_partition_fetch_bytes: int = 4_000_000) -> AIOKafkaConsumer:
    """A member of consumer group `group` over `topics`, committing only when told to
    (at-least-once: the caller commits after its side effects). Session, heartbeat and
    rebalance timeouts are the worker's, so it joins and leaves as fast as Faust's group.
    `fetch_max_wait_ms`: how long a fetch that finds nothing waits (on Tansu, always that long:
    infra/tansu.py), so how often an idle member polls."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings, bootstrap), group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", fetch_max_wait_ms=fetch_max_wait_ms,
        fetch_max_bytes=16_000_000, max_partition_fetch_bytes=max_partition_fetch_bytes,
        session_timeout_ms=int(settings.broker_session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval_s * 1000),
        rebalance_timeout_ms=int(settings.broker_rebalance_timeout_s * 1000),
        # A member that does not poll for this long leaves its group. The sink does not poll
        # while it retries a batch through a ClickHouse outage; Faust's default, not 5 min.
        max_poll_interval_ms=1_000_000)
    consumer.subscribe(list(topics), listener=listener)
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await stop_consumer(consumer)
        raise BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}") from exc
    return consumer


async def start_tail_consumer(settings: Settings, bootstrap: str, topic: str,
                              from_beginning: bool = False) -> AIOKafkaConsumer:
    """A group-less consumer over all partitions of `topic`, at the end (or the beginning)."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                fetch_max_bytes=16_000_000, max_partition_fetch_bytes=16_000_000)
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await stop_consumer(consumer)
        raise BrokerUnavailable(f"cannot reach the broker at {bootstrap}: {exc}") from exc
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await stop_consumer(consumer)
        raise BrokerUnavailable(f"topic {topic} does not exist (is the worker set up?)")
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    if not from_beginning:
        ends = await end_offsets(consumer, tps)
        for tp in tps:
            consumer.seek(tp, ends[tp])
    return consumer


async def read_to_end(settings: Settings, bootstrap: str, topic: str) -> list[bytes]:
    """Every message value of `topic` from the beginning up to its current end."""
    consumer = await start_tail_consumer(settings, bootstrap, topic, from_beginning=True)
    try:
        tps = list(consumer.assignment())
        ends = await end_offsets(consumer, tps)
        out: list[bytes] = []
        while not await _at_end(consumer, ends):
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                out.extend(m.value for m in messages)
        return out
    finally:
        await consumer.stop()


async def _at_end(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def consumer_lag(settings: Settings, bootstrap: str, group: str,
                       topics: Iterable[str], partitions: int | None = None) -> dict[str, int]:
    """Per-topic lag of `group`: end offset minus committed offset, summed over partitions.

    With `partitions`, every topic's partitions 0..partitions-1 are read: a fresh client's
    metadata may not list a topic yet, and a lag that must not be missed (the end-to-end
    repair waits for none) cannot rely on it."""
    # A consumer's committed() rather than the admin API: Tansu cannot answer the latter.
    consumer = AIOKafkaConsumer(**client_kwargs(settings, bootstrap), group_id=group,
                                enable_auto_commit=False)
    try:
        await consumer.start()
        tps = [TopicPartition(t, p) for t in topics
               for p in (range(partitions) if partitions is not None
                         else sorted(consumer.partitions_for_topic(t) or ()))]
        if not tps:
            return {}
        consumer.assign(tps)
        ends = await end_offsets(consumer, tps)
        lag: dict[str, int] = {}
        for tp in tps:
            done = await consumer.committed(tp) or 0
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, ends[tp] - done)
        return lag
    except (KafkaError, OSError) as exc:
        raise BrokerUnavailable(f"cannot read consumer lag from {bootstrap}: {exc}") from exc
    finally:
        await consumer.stop()
