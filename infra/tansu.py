"""Workarounds for Tansu, the embedded broker (infra/broker.py), and only for it.

Tansu speaks the Kafka protocol but differs from Apache Kafka where reviewbus notices:

- **ListOffsets(latest) under-reports.** Tansu answers with the last batch's base offset + 1,
  short by the batch's other records. `true_end_offsets` fetches once from just before the
  reported end and takes the larger of that and the fetch's high watermark.
- **A fetch that finds no data can be held for the whole `fetch.max.wait.ms`**, even
  when data arrives meanwhile (not always: docs/operations/long-running.md), so aiokafka's
  500 ms (Faust's 1500 ms) can add that much latency to every hop. `FETCH_MAX_WAIT_MS` is
  short; on Apache Kafka it costs a few idle fetches, no more. The worker's Faust consumer
  waits longer while idle (`REVIEWBUS_FETCH_IDLE_*`, infra/faust_compat.py).
- **The admin API cannot list consumer-group offsets**, so lag reads a consumer's
  `committed()` (infra/kafka.py consumer_lag), which works on both.

The end-offset fix is opt-out: `enabled()` is true unless `REVIEWBUS_TANSU_WORKAROUNDS=0`
(a deployment on Apache Kafka may set it to save one fetch per end-offset read; on Kafka
the fix returns the same offsets, so leaving it on is harmless). Nothing here can tell Tansu
from Kafka through aiokafka (its client keeps no cluster id), which is why it is a switch.
"""

from __future__ import annotations

import os

from aiokafka import AIOKafkaConsumer, TopicPartition

FETCH_MAX_WAIT_MS = 20
SWITCH = "REVIEWBUS_TANSU_WORKAROUNDS"


def enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


async def true_end_offsets(consumer: AIOKafkaConsumer,
                           tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """End offsets of assigned partitions that are right on Tansu too.

    Tansu answers ListOffsets(latest) with the last batch's base offset + 1, which is short
    when that batch holds several records; a fetch's high watermark is right. So: fetch once
    from just before the reported end and take the larger of the two.
    """
    reported = await consumer.end_offsets(tps)
    saved = {tp: await consumer.position(tp) for tp in tps}
    for tp in tps:
        consumer.seek(tp, max(reported[tp] - 1, 0))
    await consumer.getmany(*tps, timeout_ms=300)
    ends = {tp: max(reported[tp], consumer.highwater(tp) or 0) for tp in tps}
    for tp in tps:
        consumer.seek(tp, saved[tp])
    return ends


async def end_offsets(consumer: AIOKafkaConsumer,
                      tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The end offsets of assigned partitions: Tansu-safe while enabled(), else the broker's
    own ListOffsets answer."""
    if enabled():
        return await true_end_offsets(consumer, tps)
    return await consumer.end_offsets(tps)
