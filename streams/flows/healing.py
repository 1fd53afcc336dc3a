"""healing: keep findings flowing while versions fail and the broker comes and goes.

- Fallback: when a served request fails, re-send it to another healthy version (a HealingAction
  `fallback` records it); when none is left, the user gets an error result, never silence.
- End-to-end repair: the archive of accepted inputs in ClickHouse is the record of what was
  promised. On the leader, an accepted request with no served result after
  `inference.reconcile_after_s`, while the consumer group has no backlog on the routing path
  (so it is not merely queued), is routed again (at most twice; a `reroute` HealingAction
  records it). Storage is idempotent, so a repair never counts twice. This closes any gap the
  transport leaves after a hard crash, whatever its cause.
- Broker watchdog: the embedded broker keeps topics in memory, so a restarted broker has none.
  Every `REVIEWBUS_TOPIC_CHECK_INTERVAL_S` the worker checks that its topics exist. When the
  broker lost them, the worker recreates them (explicit partition counts) and restarts itself
  in place (exec, same pid): Faust's consumer remembers offsets of the lost topics and would
  skip the first messages of the new ones, so a clean start is the only correct one. The new
  start rebuilds the registry from ClickHouse (the lifecycle history) and reads every new
  topic from its beginning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from agents.routing import choose_fallback
from infra import queries
from infra.kafka import client_kwargs, consumer_lag
from schemas import AcceptedChange, FailureEvent, HealingAction, ReviewFindings, Role, Status

from .. import names
from ..batching import dead_letter_all, run_batches
from ..context import AppContext, emit, log
from ..metrics import EVENTS
from .router import inference_topic_of, route


def plan(ctx: AppContext, failure: FailureEvent) -> list:
    request = failure.request
    assert request is not None
    tried = [*request.tried, failure.version_id]
    exclude = set(tried) | set(ctx.unavailable()) | {
        v for v in ctx.registry.registry.versions
        if inference_topic_of(ctx, v, Role.fallback) is None}
    target, topic = None, None
    if request.attempt <= ctx.config.inference.max_fallback_attempts:
        # only a version that may see this repository's requests (a refit stable for
        # another repository is not a fallback for this one)
        target = choose_fallback(ctx.registry.registry, exclude, request.change.repo)
        topic = inference_topic_of(ctx, target, Role.fallback) if target else None
    if target is None or topic is None:
        c = request.change
        final = ReviewFindings(
            request_id=request.request_id, task=request.task, repo=c.repo, sha=c.sha,
            pull_request=c.pull_request, version_id=failure.version_id, role=request.role,
            status=Status(failure.status), fallback_from=request.fallback_from,
            error=f"every version failed ({', '.join(tried)}): {failure.error}")
        return [(ctx.topics.findings, c.repo, final)]
    retry = request.model_copy(update={
        "event_id": f"{request.request_id}-fb{request.attempt}",
        "version_id": target, "role": Role.fallback, "attempt": request.attempt + 1,
        "tried": tried, "fallback_from": request.fallback_from or failure.version_id})
    action = HealingAction(
        event_id=f"{request.request_id}-heal{request.attempt}", task=request.task,
        action="fallback", version_id=failure.version_id, target_version=target,
        request_id=request.request_id, reason=f"{failure.status}: {failure.error}"[:500])
    return [(topic, request.request_id, retry),
            (ctx.topics.healing, failure.version_id, action)]


def register(ctx: AppContext) -> None:
    def handle(event) -> list:
        failure = FailureEvent.model_validate_json(event.value)
        if failure.request is None:
            return []
        EVENTS.labels(agent="healing", outcome="handled").inc()
        return plan(ctx, failure)

    async def dead_letter(events, exc: Exception) -> None:
        await dead_letter_all(ctx, events, repr(exc), "healing")

    @ctx.agent(ctx.topics.failures, name="healing")
    async def healing(stream):
        await ctx.registry.ready.wait()
        await run_batches(ctx, stream, "healing", handle, on_send_error=dead_letter)

    @ctx.timer(ctx.config.inference.reconcile_interval_s, name="reconcile", on_leader=True)
    async def reconcile_timer() -> None:
        if ctx.registry.ready.is_set():
            await reconcile_once(ctx)

    @ctx.task(name="broker_watchdog")
    async def watchdog() -> None:
        await broker_watchdog(ctx)


# ---- end-to-end repair ------------------------------------------------------------------------

MAX_REROUTES = 2  # per request, counted in ctx.rerouted


async def backlog(ctx: AppContext) -> int:
    """Messages not committed yet on the routing path: by intake's group on the inputs, by the
    hops' group on the inference topics and `results`, and by the sink's own group on
    `accepted` and `results` (an answer not stored yet makes its request look unserved:
    repairing it then would only repeat the inference)."""
    s, p = ctx.settings, ctx.settings.partitions
    path = [names.topic(s, "results"),
            *(names.inference_topic(s, v) for v in ctx.topics.inference), names.pool_topic(s)]
    total = 0
    for group, topics in ((names.intake_group(s), names.input_topics(s)),
                          (names.hops_group(s), path),
                          (names.sink_group(s), [names.topic(s, "accepted"),
                                                 names.topic(s, "results")])):
        total += sum((await consumer_lag(s, ctx.bootstrap, group, topics, p)).values())
    return total


async def reconcile_once(ctx: AppContext) -> list[str]:
    """Route again the accepted requests that got lost in transit; their ids."""
    cfg, _rerouted = ctx.config.inference, ctx.rerouted
    if ctx.store is None or not cfg.reconcile:
        return []
    query = queries.unserved(ctx.config.task, cfg.reconcile_after_s, cfg.reconcile_window_s)
    rows = (await ctx.store.query(query.sql, query.params)).as_dicts()
    rows = [r for r in rows if _rerouted.get(r["request_id"], 0) < MAX_REROUTES]
    if not rows or await backlog(ctx) > 0:
        return []
    outputs, ids = [], []
    for row in rows:
        accepted = AcceptedChange.model_validate_json(row["accepted"])
        n = _rerouted[accepted.request_id] = _rerouted.get(accepted.request_id, 0) + 1
        # Routed again here (the archive already holds the AcceptedChange): the requests carry
        # new event ids, the request id stays, so the store counts the request once.
        outputs += route(ctx, accepted)
        log.debug("request %s routed again (%d)", accepted.request_id, n)
        ids.append(accepted.request_id)
    reason = (f"{len(ids)} accepted requests had no served result after "
              f"{cfg.reconcile_after_s:g} s and no backlog on the bus: routed again "
              f"({', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''})")
    outputs.append((ctx.topics.healing, "-", HealingAction(
        event_id=f"re-{ids[0]}-{len(ids)}-{_rerouted[ids[0]]}", task=ctx.config.task,
        action="reroute", version_id="-", request_id=ids[0] if len(ids) == 1 else None,
        reason=reason[:500])))
    await emit(outputs)
    log.warning("end-to-end repair: %s", reason)
    EVENTS.labels(agent="healing", outcome="rerouted").inc(len(ids))
    return ids


# ---- broker watchdog -------------------------------------------------------------------------


def expected_topics(ctx: AppContext) -> dict[str, int]:
    """Every topic this worker needs, with its partition count: ours and Faust's own."""
    wanted = names.all_topics(ctx.settings, list(ctx.topics.inference))
    for table in ctx.app.tables.values():
        wanted[table.changelog_topic.get_topic_name()] = ctx.settings.partitions
    wanted[f"{ctx.app.conf.id}-__assignor-__leader"] = 1
    return wanted


async def recreate_missing(ctx: AppContext, admin) -> list[str]:
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    existing = set(await admin.list_topics())
    wanted = expected_topics(ctx)
    missing = sorted(t for t in wanted if t not in existing)
    if not missing:
        return []
    log.warning("the broker lost %d topics (restarted with memory storage?): recreating %s",
                len(missing), missing)
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics([NewTopic(t, wanted[t], 1) for t in missing])
    EVENTS.labels(agent="healing", outcome="topics_recreated").inc(len(missing))
    return missing


async def restart_in_place(ctx: AppContext, reason: str) -> None:
    """exec this worker again (same pid, same command, same environment): a clean start.

    The store is closed first (its lock is released, chDB flushed); our own in-flight markers
    are removed, since this is no crash."""
    log.warning("%s: restarting this worker in place (same pid) for a clean start", reason)
    if ctx.store is not None:
        try:
            await asyncio.wait_for(ctx.store.close(), timeout=15)
        except Exception:  # exec anyway: the lock goes with the old process image
            log.exception("closing the store before the restart failed")
    for marker in ctx.crash_guard.directory.glob(f"{os.getpid()}-*.json"):
        marker.unlink(missing_ok=True)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, list(sys.orig_argv))


async def broker_watchdog(ctx: AppContext) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    await ctx.registry.ready.wait()
    admin = None
    while True:
        await asyncio.sleep(ctx.settings.topic_check_interval_s)
        try:
            if admin is None:
                admin = AIOKafkaAdminClient(**client_kwargs(ctx.settings, ctx.bootstrap),
                                            request_timeout_ms=5000)
                await admin.start()
            missing = await recreate_missing(ctx, admin)
            # Ours existed for sure (run_worker created them); Faust's own alone prove nothing.
            ours = set(names.all_topics(ctx.settings, list(ctx.topics.inference)))
            if ours.intersection(missing):
                await restart_in_place(ctx, f"the broker lost {len(missing)} topics")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # broker down: try again next tick, with a fresh client
            log.info("broker watchdog: %s", exc)
            if admin is not None:
                with contextlib.suppress(Exception):
                    await admin.close()
            admin = None
