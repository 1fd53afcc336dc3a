"""registry: every worker folds the whole lifecycle topic into the view the router reads.

A group-less consumer (every worker reads every lifecycle event) instead of a group agent: the
router on each worker needs the full registry, not the partitions it happens to own.
"""

from __future__ import annotations

import asyncio

from agents.blocklist import blocked_by, describe
from agents.lifecycle_commands import register_events
from agents.registry import apply_event, newer_schema_of, newer_schema_text
from agents.routing import traffic_table
from infra.kafka import start_tail_consumer, true_end_offsets
from infra.readback import lifecycle_events_from_rows, lifecycle_sql
from schemas import LifecycleEvent, Registry

from ..context import AppContext, emit, log
from ..metrics import VERSION_STATE


async def restore_from_store(ctx: AppContext) -> tuple[list[LifecycleEvent], str | None]:
    """After a broker restart (memory storage), the lifecycle history lives on in ClickHouse.
    The events, up to the first one a newer reviewbus wrote, and if there is one, why the
    fold stops there."""
    if ctx.store is None:
        return [], None
    try:
        rows = (await ctx.store.query(lifecycle_sql(ctx.config.task))).as_dicts()
    except Exception:
        log.exception("could not read the lifecycle history from the store")
        return [], None
    return lifecycle_events_from_rows(rows, on_unreadable=lambda row: log.exception(
        "unreadable lifecycle row %s in the store", row.get("event_id")))


async def bootstrap_events(ctx: AppContext) -> list[LifecycleEvent]:
    """What to publish when the topic's history is read: the history restored from the store
    when the topic lost it, and the registration of the versions file's new versions."""
    if ctx.registry.frozen:  # the topic holds a newer reviewbus's event: decide nothing
        return []
    restored, newer = (await restore_from_store(ctx) if not ctx.registry.registry.versions
                       else ([], None))
    if newer is not None:
        # A newer reviewbus wrote this history: fold what this code can read, here only, and
        # publish nothing, so that an upgraded worker restores the whole of it to the topic.
        for event in restored:
            ctx.registry.apply(event)
        ctx.registry.halt(newer)
        return []
    registry = ctx.registry.registry
    for event in restored:
        registry, _ = apply_event(registry, event)
    for spec in ctx.config.versions:
        blocked = blocked_by(ctx.config.blocklist, spec)
        if blocked is not None and spec.id not in registry.versions:
            log.warning("version %s is not registered: blocklisted: %s", spec.id,
                        describe(blocked))
    return restored + register_events(ctx.config.versions, registry,
                                      blocklist=ctx.config.blocklist)


def register(ctx: AppContext) -> None:
    @ctx.task(name="registry")
    async def registry() -> None:
        await follow_lifecycle(ctx)


async def follow_lifecycle(ctx: AppContext) -> None:
    name = ctx.topics.name("lifecycle")
    consumer = await start_tail_consumer(ctx.settings, ctx.bootstrap, name, from_beginning=True)
    try:
        tps = list(consumer.assignment())
        ends = await true_end_offsets(consumer, tps)
        bootstrapped = False
        published = None  # the registry the gauges show (a fold replaces the object)
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for m in messages:
                    try:
                        ctx.registry.apply(LifecycleEvent.model_validate_json(m.value))
                    except Exception:
                        newer = newer_schema_of(m.value)
                        if newer is not None:  # a newer reviewbus's event: stop, never skip it
                            ctx.registry.halt(newer_schema_text(newer, f"at offset {m.offset}"))
                        else:
                            log.exception("unreadable lifecycle event at offset %s", m.offset)
            if ctx.registry.ready.is_set():
                if ctx.registry.registry is not published:  # not 5 times a second for nothing
                    published = publish_gauges(ctx)
                continue
            positions = {tp: await consumer.position(tp) for tp in tps}
            if any(positions[tp] < ends[tp] for tp in tps):
                continue
            if not bootstrapped:
                bootstrapped = True
                events = await bootstrap_events(ctx)
                if events:
                    await emit([(ctx.topics.lifecycle, e.version_id, e) for e in events])
                    ends = await true_end_offsets(consumer, tps)
                    continue
            # before ready: /health says ready only once /metrics has them
            published = publish_gauges(ctx)
            ctx.registry.ready.set()
            log.warning("registry ready: %s", {
                v: e.state.value for v, e in ctx.registry.registry.versions.items()})
    except asyncio.CancelledError:
        raise
    finally:
        await consumer.stop()


def publish_gauges(ctx: AppContext) -> Registry:
    """Each version's traffic share as a gauge; the registry they show."""
    registry = ctx.registry.registry
    for version, share in traffic_table(registry).items():
        VERSION_STATE.labels(version=version).set(share)
    return registry
