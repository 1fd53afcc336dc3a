"""The worker's web port: /health (with leadership and partitions), /metrics, /registry, and
the store endpoints (the hosting worker's store, for the CLI and the other workers)."""

from __future__ import annotations

import os

from faust import web as faust_web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.routing import traffic_table

from .context import AppContext


def membership(ctx: AppContext) -> dict:
    """This worker's place in the consumer group: Faust's leader flag (the leader timers run
    where it is true), the partitions assigned to it now, and whether it hosts the store."""
    app = ctx.app
    try:
        tps = set(app.consumer.assignment())
    except (AttributeError, RuntimeError, KeyError):  # no consumer before the first join
        tps = set()
    for consumer in ctx.group_consumers.values():  # intake's group: the input topics
        tps |= set(consumer.assignment())
    assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in tps)
    try:
        leader = bool(app.is_leader())
    except (AttributeError, RuntimeError, KeyError):
        leader = False
    store = getattr(ctx.store, "store", None)
    return {"leader": leader, "partitions": assigned,
            "worker_index": int(os.environ.get("REVIEWBUS_WORKER_INDEX") or 0),
            "hosts_store": bool(getattr(store, "hosting", store is not None))}


def register(ctx: AppContext) -> None:
    app = ctx.app

    @app.page("/health")
    async def health(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        ready = ctx.registry.ready.is_set()
        body = {
            "status": "ok" if ready and ctx.store is not None else "starting",
            "pid": os.getpid(), "broker": ctx.bootstrap, "task": ctx.config.task,
            "store": ctx.store is not None, "registry_ready": ready,
            # set when a newer reviewbus wrote a lifecycle event: this worker needs upgrading
            "registry_behind": ctx.registry.registry.behind,
            # Informational: events wait in Kafka until these hops' own groups have joined.
            "groups_joined": {hop: e.is_set() for hop, e in ctx.joined.items()},
            "versions": {v: e.state.value for v, e in ctx.registry.registry.versions.items()},
            "open_circuits": sorted(ctx.unavailable()),
            **membership(ctx),
        }
        return self.json(body, status=200 if body["status"] == "ok" else 503)

    @app.page("/membership")
    async def member(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        return self.json({"pid": os.getpid(), **membership(ctx)})

    @app.page("/metrics")
    async def metrics(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway.
        return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0]
                          + "; version=0.0.4")

    @app.page("/registry")
    async def registry(self: faust_web.View, request: faust_web.Request) -> faust_web.Response:
        reg = ctx.registry.registry
        shares = traffic_table(reg)
        return self.json({"task": reg.task, "versions": [
            {"version_id": v, "state": e.state.value, "traffic_percent": shares.get(v, 0.0)}
            for v, e in sorted(reg.versions.items())]})

    @app.page("/store/query")
    class StoreQuery(faust_web.View):
        async def post(self, request: faust_web.Request) -> faust_web.Response:
            from infra.store import serve_store_request  # needs <home>/store.token

            status, body = await serve_store_request(
                ctx.store, "query", authorization=request.headers.get("Authorization"),
                body=await request.read(), home=ctx.settings.home)
            return self.json(body, status=status)

    @app.page("/store/insert")
    class StoreInsert(faust_web.View):
        async def post(self, request: faust_web.Request) -> faust_web.Response:
            from infra.store import serve_store_request  # needs <home>/store.token

            status, body = await serve_store_request(
                ctx.store, "insert", authorization=request.headers.get("Authorization"),
                body=await request.read(), home=ctx.settings.home)
            return self.json(body, status=status)
