"""The one object a worker's flows share: app, topics, settings and process-local state.

`AppContext` is built by streams/app.py `create_app` and passed to every flow's `register`;
nothing here is module-global, so a test (or a second app in one process) builds its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agents.breaker import BreakerBoard
from agents.health import HealthTracker, tracker_from_config
from agents.registry import SkipCode, apply_event
from agents.settings import Limits, Settings
from agents.shadow_join import ShadowJoin
from infra.crash_markers import CrashGuard
from schemas import Event, LifecycleEvent, Registry

from .guard import faulty, guarded_task, guarded_timer
from .topic_streams import TopicStreams

if TYPE_CHECKING:
    import faust
    from faust import TopicT

    from .topics import Topics

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
            if skipped.code == SkipCode.newer_schema:
                log.error("the registry stops here: %s", skipped.text)
            elif skipped.code != SkipCode.behind:
                log.info("lifecycle event %s skipped: %s", event.event_id, skipped)
            return
        self._notify(event)

    @property
    def frozen(self) -> bool:
        """The fold stopped at an event of a newer reviewbus: this worker decides nothing
        (no lifecycle event of its own) until it is upgraded."""
        return self.registry.behind is not None

    def halt(self, why: str) -> None:
        """An event this code cannot even read, written by a newer reviewbus: fold no more."""
        if self.registry.behind is None:
            log.error("the registry stops here: %s", why)
            self.registry = self.registry.model_copy(update={"behind": why})

    def _notify(self, event: LifecycleEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a listener must never stop the registry fold
                log.exception("registry listener failed on %s", event.event_id)


class AppContext:
    """One worker's app and state. Attributes are set once here; flows mutate only the state."""

    def __init__(self, app: faust.App, settings: Settings, config, bootstrap: str,
                 topics: Topics) -> None:
        self.app, self.settings, self.config = app, settings, config
        self.bootstrap, self.topics = bootstrap, topics
        self.store = None  # infra.store.AsyncStore, opened by the worker command
        self.registry = RegistryView(config.task)
        self.breakers = BreakerBoard(failure_threshold=config.breaker.failure_threshold,
                                     cooldown_s=config.breaker.cooldown_s,
                                     window_s=config.breaker.window_s,
                                     overrides=config.breaker.overrides())
        self.health: HealthTracker = tracker_from_config(config.quarantine, config.slo)
        self.limits = Limits()
        self.faults = faulty(settings.fault_timer_errors)
        self.shadow_join = ShadowJoin(ttl_s=config.shadow.join_ttl_s,
                                      max_pending=config.shadow.max_pending)
        self.crash_guard = CrashGuard(settings.home / "inflight")
        # Memories of single flows, kept here so that no flow module holds state:
        self.quarantined: dict[str, Any] = {}  # quarantine: version -> Quarantined
        self.rerouted: dict[str, int] = {}  # healing's end-to-end repair: request -> times
        self.backends: dict[str, tuple[str, Any]] = {}  # inference: version -> (spec, backend)
        self.backend_locks: dict[str, asyncio.Lock] = {}
        self.rotation_recorded: dict[str, tuple[str, float]] = {}  # rotation: holds recorded
        self.rotation_sent: dict[str, float] = {}  # rotation: transitions sent, not folded
        self.join_reported = {"expired": 0, "evicted": 0}  # shadow: drops counted so far
        self.agents: dict[str, Any] = {}  # agent name -> Faust agent, filled by register()
        # Hops with a consumer group of their own (streams/group_consumer.py): set once the
        # group first gave this worker its partitions.
        self.joined: dict[str, asyncio.Event] = {"sink": asyncio.Event(),
                                                 "intake": asyncio.Event(),
                                                 "hops": asyncio.Event()}
        # Their consumers whose partitions /health lists beside Faust's (intake's, the hops').
        self.group_consumers: dict[str, Any] = {}
        # The inference and results hops' streams, fed by one consumer (streams/flows/hops.py).
        self.hops = TopicStreams("hops")

    def unavailable(self) -> frozenset[str]:
        return self.breakers.open_versions()

    def timer(self, interval_s: float, *, name: str, on_leader: bool = False):
        """`@app.timer` under the guard (streams/guard.py): an exception never stops the
        worker."""
        return guarded_timer(self.app, interval_s, name=name, on_leader=on_leader,
                             faults=self.faults)

    def task(self, *, name: str):
        """`@app.task` under the guard: an exception restarts it after `task_restart_s`."""
        return guarded_task(self.app, name=name, restart_s=self.settings.task_restart_s,
                            faults=self.faults)

    def agent(self, topic, *, name: str):
        """`@app.agent(topic, name=name, concurrency=1)`, remembered in `agents`."""

        def decorate(fn):
            self.agents[name] = self.app.agent(topic, name=name, concurrency=1)(fn)
            return fn

        return decorate

    async def send_to_dlq(self, event, error: str, agent: str) -> None:
        """Dead-letter one consumed Faust event with the reason; the stream goes on."""
        await self.dead_letter_messages([(event.message, error)], agent)

    async def dead_letter_messages(self, failed: list[tuple[Any, str]], agent: str) -> None:
        """Dead-letter consumed messages (a Faust message or an aiokafka record: value, topic,
        partition, offset, key), each with its reason, in one send; returns once acked."""
        await emit(self.dead_letter_outputs(failed, agent))

    def dead_letter_outputs(self, failed: list[tuple[Any, str]], agent: str) -> list:
        """The dead letters of `failed` as outputs (`send_all`'s tuples), counted now: for a
        hop that sends them with its batch and commits only once they are acked."""
        from agents.intake import dead_letter

        from .metrics import DEAD_LETTERS, EVENTS

        DEAD_LETTERS.labels(source=agent).inc(len(failed))
        EVENTS.labels(agent=agent, outcome="dead_letter").inc(len(failed))
        return [(self.topics.dlq, msg.key, dead_letter(
            msg.value, error=f"{agent}: {error}", topic=msg.topic, partition=msg.partition,
            offset=msg.offset, key=msg.key)) for msg, error in failed]


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


async def send_all(outputs: Iterable[tuple[TopicT, str | bytes | None, Event | bytes]]
                   ) -> list[asyncio.Future]:
    """Hand every output (an Event, or its JSON already encoded) to the producer without
    awaiting the broker; the futures of its acks, for `await asyncio.gather(*futures)`.

    Straight to the aiokafka producer under Faust's (`faust_compat.aiokafka_producer`), not
    through Faust's `Topic.send`, which adds a pending message, a future message, callbacks and
    sensor calls to every record: 40 -> 17 us of CPU per record (`python -m bench.hop_cost`),
    and one worker serves about twice the events per second (docs/concepts/batching.md).
    aiokafka picks the partition (the partitioner Faust gives it), stamps the time and merges
    the records into its batches exactly as before. Record batches of our own
    (`create_batch`/`send_batch`) cost less still, but aiokafka makes `send_batch` wait until
    the partition's previous batch is drained, so two hops writing one topic would wait on
    the broker for each other; not used.
    """
    from infra.faust_compat import aiokafka_producer

    futures: list[asyncio.Future] = []
    producer = None
    try:
        for topic, key, event in outputs:
            if producer is None:
                producer = aiokafka_producer(topic.app)
            k = key.encode() if isinstance(key, str) else key
            value = event if isinstance(event, bytes) else encode(event)
            futures.append(await producer.send(topic.get_topic_name(), value, key=k))
    except BaseException:
        for future in futures:  # handed over, but nobody awaits them now: no "never retrieved"
            future.add_done_callback(_retrieved)
        raise
    return futures


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


async def emit(outputs: Iterable[tuple[TopicT, str | bytes | None, Event | bytes]]) -> None:
    """Send every output without awaiting each one, then wait for all the broker's acks once,
    so the sources are acked only after.

    (A pipelined variant that returned before the acks and held back Faust's offset commit
    instead was measured in bench/ and not adopted: bus throughput did not depend on it, and
    it needed a patch of Faust's private commit path.)
    """
    futures = await send_all(outputs)
    if futures:
        await asyncio.gather(*futures)


__all__ = ["AppContext", "RegistryView", "emit", "encode", "log", "send_all"]
