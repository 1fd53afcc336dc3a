"""The ceiling of the bus: a raw aiokafka consume-and-produce relay, in its own process.

`python -m bench.relay BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP` copies every message (key and
value, untouched) from IN_TOPIC to OUT_TOPIC, waiting for the broker's acks per fetched batch
before fetching the next one (at-least-once, like the worker), until SIGTERM. It prints
`ready` once its consumer group owns partitions.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from agents.settings import Settings
from infra.kafka import start_producer

from .load import group_consumer


async def relay(bootstrap: str, src: str, dst: str, group: str) -> None:
    settings = Settings(kafka=bootstrap)
    consumer = await group_consumer(settings, bootstrap, src, group)
    producer = await start_producer(settings, bootstrap)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    announced = False
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=1000)
            if not announced and consumer.assignment():
                print("ready", flush=True)
                announced = True
            futures = [await producer.send(dst, key=m.key, value=m.value)
                       for messages in batch.values() for m in messages]
            if futures:
                await asyncio.gather(*futures)
    finally:
        await producer.stop()
        await consumer.stop()


if __name__ == "__main__":
    from .core import gc_like_the_worker

    gc_like_the_worker()
    asyncio.run(relay(*sys.argv[1:5]))
