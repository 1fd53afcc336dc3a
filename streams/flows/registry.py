"""registry: every worker folds the whole lifecycle topic into the view the router reads.

A group-less consumer (every worker reads every lifecycle event) instead of a group agent: the
router on each worker needs the full registry, not the partitions it happens to own.
"""

from __future__ import annotations

import asyncio

from agents.blocklist import blocked_by, describe
from agents.registry import apply_event, register_events, traffic_table
from infra.kafka import start_tail_consumer, true_end_offsets
from infra.readback import lifecycle_event_from_row, lifecycle_sql
from schemas import LifecycleEvent

from .. import topics
from ..app import bootstrap
from ..metrics import VERSION_STATE
from ..runtime import config, emit, log, runtime, settings, task


async def restore_from_store() -> list[LifecycleEvent]:
    """After a broker restart (memory storage), the lifecycle history lives on in ClickHouse."""
    if runtime.store is None:
        return []
    try:
        rows = (await runtime.store.query(lifecycle_sql(config.task))).as_dicts()
    except Exception:
        log.exception("could not read the lifecycle history from the store")
        return []
    return [lifecycle_event_from_row(r) for r in rows]


async def bootstrap_events() -> list[LifecycleEvent]:
    restored = await restore_from_store() if not runtime.registry.registry.versions else []
    registry = runtime.registry.registry
    for event in restored:
        registry, _ = apply_event(registry, event)
    for spec in config.versions:
        blocked = blocked_by(config.blocklist, spec)
        if blocked is not None and spec.id not in registry.versions:
            log.warning("version %s is not registered: blocklisted: %s", spec.id,
                        describe(blocked))
    return restored + register_events(config.versions, registry, blocklist=config.blocklist)


@task(name="registry")
async def follow_lifecycle() -> None:
    name = topics.name("lifecycle")
    consumer = await start_tail_consumer(settings, bootstrap, name, from_beginning=True)
    try:
        tps = list(consumer.assignment())
        ends = await true_end_offsets(consumer, tps)
        bootstrapped = False
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for m in messages:
                    try:
                        runtime.registry.apply(LifecycleEvent.model_validate_json(m.value))
                    except Exception:
                        log.exception("unreadable lifecycle event at offset %s", m.offset)
            if runtime.registry.ready.is_set():
                publish_gauges()
                continue
            positions = {tp: await consumer.position(tp) for tp in tps}
            if any(positions[tp] < ends[tp] for tp in tps):
                continue
            if not bootstrapped:
                bootstrapped = True
                events = await bootstrap_events()
                if events:
                    await emit([(topics.lifecycle, e.version_id, e) for e in events])
                    ends = await true_end_offsets(consumer, tps)
                    continue
            publish_gauges()  # before ready: /health says ready only once /metrics has them
            runtime.registry.ready.set()
            log.warning("registry ready: %s", {
                v: e.state.value for v, e in runtime.registry.registry.versions.items()})
    except asyncio.CancelledError:
        raise
    finally:
        await consumer.stop()


def publish_gauges() -> None:
    for version, share in traffic_table(runtime.registry.registry).items():
        VERSION_STATE.labels(version=version).set(share)
