"""hops: the one consumer of the inference topics and `results` (streams/topic_streams.py).

The inference agents (streams/flows/inference.py) and the results hop (results.py) read their
topics through `ctx.hops`, streams this task feeds: one aiokafka consumer in the group
`<app id>-hops` on the main loop, instead of Faust's consumer and its thread. It waits for the
first carry of offsets from the Faust group before it hands out anything (a first fetch may
precede the carry's seek), and a failed carry restarts it.
"""

from __future__ import annotations

from infra.faust_compat import adapt_fetch_wait
from infra.kafka import start_group_consumer, stop_consumer

from .. import names
from ..context import AppContext
from ..metrics import HOPS_FETCH_WAIT_MS, HOPS_FETCH_WAIT_SWITCHES
from ..topic_streams import HopsListener


def register(ctx: AppContext) -> None:
    settings = ctx.settings

    @ctx.task(name="hops")
    async def hops() -> None:
        hub = ctx.hops
        # What a member may spend in its revocation: the rebalance timeout less a heartbeat
        # (when it learns of the rebalance), halved for the commit after it.
        settle_s = min(1.0, max(0.0, settings.broker_rebalance_timeout_s
                                - settings.broker_heartbeat_interval_s) / 2)
        listener = HopsListener(hub, "hops", ctx.joined["hops"], settings, ctx.bootstrap,
                                ctx.app.conf.id, settle_s=settle_s)
        consumer = await start_group_consumer(settings, ctx.bootstrap, names.hops_group(settings),
                                              hub.topics, listener)
        listener.attach(consumer)
        # The idle fetch wait of Faust's consumer, which read these topics before: an idle
        # worker polls 4 times a second, not 50, and the first request after a quiet spell
        # waits at most REVIEWBUS_FETCH_IDLE_WAIT_MS more here, as it did in Faust.
        adapt_fetch_wait(consumer, settings.fetch_idle_after_s, settings.fetch_idle_wait_ms,
                         gauge=HOPS_FETCH_WAIT_MS, switches=HOPS_FETCH_WAIT_SWITCHES)
        ctx.group_consumers["hops"] = consumer
        try:
            await listener.wait_carried()  # nothing is handed out before the first carry
            await hub.run(consumer, check=listener.check)
        finally:
            ctx.group_consumers.pop("hops", None)
            await stop_consumer(consumer)
