"""Fake Faust topics for tests that run a hop's code without a broker.

streams/context.py `send_all` reaches a topic's name and its app's aiokafka producer, and
calls the producer's `send(topic, value, key=...)` per output. A `FakeTopic` subclass defines
only `async send(key, value, force)` -> a future (its fake broker's ack of that record); the
fake producer here calls it for each record, in order, so a test sees every record as it was
sent and decides when and whether the broker acks it.
"""

from __future__ import annotations

import weakref
from types import SimpleNamespace

from faust.types.enums import ProcessingGuarantee

_TOPICS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


class _Producer:
    async def send(self, topic: str, value, key=None):
        return await _TOPICS[topic].send(key=key, value=value, force=True)


_PRODUCER = _Producer()
_APP = SimpleNamespace(
    conf=SimpleNamespace(processing_guarantee=ProcessingGuarantee.AT_LEAST_ONCE),
    producer=SimpleNamespace(_ensure_producer=lambda: _PRODUCER))


class FakeTopic:
    """Define `async send(self, key, value, force)` returning a future."""

    app = _APP

    def __init__(self) -> None:
        _TOPICS[self.get_topic_name()] = self

    def get_topic_name(self) -> str:
        return f"fake-{id(self)}"
