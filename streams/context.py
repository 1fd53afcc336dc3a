"""Process-local state shared by the agents of one worker: store, registry view, health."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from faust import TopicT

from agents.breaker import BreakerBoard
from agents.health import HealthTracker, tracker_from_config
from agents.registry import apply_event
from agents.settings import Limits
from schemas import Event, LifecycleEvent, Registry

from .app import app, config, settings
from .guard import faulty, guarded_task, guarded_timer

log = logging.getLogger("reviewbus")


class RegistryView:
    """This worker's fold of the lifecycle topic; `ready` once it caught up at start."""

    def __init__(self, task: str) -> None:
        self.registry = Registry(task=task)
        self.ready = asyncio.Event()
        # Called with each event that applied (healing resets health and breakers on restore).
        self.listeners: list = []

    def apply(self, event: LifecycleEvent) -> None:
        self.registry, skipped = apply_event(self.registry, event)
        if skipped:
            log.info("lifecycle event %s skipped: %s", event.event_id, skipped)
            return
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener must never stop the registry fold
                log.exception("registry listener failed on %s", event.event_id)


class Runtime:
    def __init__(self) -> None:
        self.store = None  # infra.store.AsyncStore, opened by the worker command
        self.registry = RegistryView(config.task)
        self.breakers = BreakerBoard(failure_threshold=config.breaker.failure_threshold,
                                     cooldown_s=config.breaker.cooldown_s,
                                     window_s=config.breaker.window_s,
                                     overrides=config.breaker.overrides())
        self.health: HealthTracker = tracker_from_config(config.quarantine, config.slo)
        self.limits = Limits()

    def unavailable(self) -> frozenset[str]:
        return self.breakers.open_versions()


runtime = Runtime()

FAULTS = faulty(settings.fault_timer_errors)


def timer(interval_s: float, *, name: str, on_leader: bool = False):
    """`@app.timer` under the guard (streams/guard.py): an exception never stops the worker."""
    return guarded_timer(app, interval_s, name=name, on_leader=on_leader, faults=FAULTS)


def task(*, name: str):
    """`@app.task` under the guard: an exception restarts it after `task_restart_s`."""
    return guarded_task(app, name=name, restart_s=settings.task_restart_s, faults=FAULTS)


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


async def emit(outputs: Iterable[tuple[TopicT, str | bytes | None, Event]]) -> None:
    """Send every output and wait for the broker's acks, so the source is acked only after.

    (A pipelined variant that returned before the acks and held back Faust's offset commit
    instead was measured in bench/ and not adopted: bus throughput did not depend on it, and
    it needed a patch of Faust's private commit path.)
    """
    futures = []
    for topic, key, event in outputs:
        k = key.encode() if isinstance(key, str) else key
        futures.append(await topic.send(key=k, value=encode(event), force=True))
    if futures:
        await asyncio.gather(*futures)


async def send_to_dlq(event, error: str, agent: str) -> None:
    """Dead-letter one consumed message with the reason; the stream goes on."""
    from agents.intake import dead_letter

    from . import topics
    from .metrics import DEAD_LETTERS, EVENTS

    msg = event.message
    letter = dead_letter(msg.value, error=f"{agent}: {error}", topic=msg.topic,
                         partition=msg.partition, offset=msg.offset, key=msg.key)
    await emit([(topics.dlq, msg.key, letter)])
    DEAD_LETTERS.labels(source=agent).inc()
    EVENTS.labels(agent=agent, outcome="dead_letter").inc()


__all__ = ["config", "emit", "encode", "log", "runtime", "send_to_dlq", "settings", "task", "timer"]
