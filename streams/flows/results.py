"""results: the one consumer of `results`, for the shadow join and the health judge.

Two agents read every result before, the shadow join (streams/flows/shadow.py) and
quarantine's health tracker (streams/flows/quarantine.py), and each paid Faust's per-message
cost (fetch, deliver, take, ack) and its own parse. This agent reads each result once with
orjson and hands it to both; each part fails alone, as when they were two agents: the part
that raises dead-letters the result under its own name (`shadow`, `quarantine`) and the other
part's outputs still go out. Batched like every hop (streams/batching.py); no partitioned
state beyond the join, which `results` (keyed by request id) already partitions.
"""

from __future__ import annotations

import contextlib

import orjson

from ..batching import dead_letter_all, run_batches
from ..context import AppContext, log
from .quarantine import judge
from .shadow import join_result, publish_join_metrics


async def read_result(ctx: AppContext, event) -> list:
    """One result: judged for its version's health, then joined; the comparisons due."""
    head = orjson.loads(event.value)  # unreadable: dead-lettered by the batch loop
    if not isinstance(head, dict):
        raise ValueError(f"a result is a JSON object, not {type(head).__name__}")
    try:
        await judge(ctx, head)
    except Exception as exc:  # one part's bug never stops the other
        await _part_failed(ctx, event, "quarantine", exc)
    try:
        return join_result(ctx, head, event.value)
    except Exception as exc:
        await _part_failed(ctx, event, "shadow", exc)
        return []


async def _part_failed(ctx: AppContext, event, agent: str, exc: Exception) -> None:
    log.exception("%s failed on one result", agent)
    with contextlib.suppress(Exception):
        await ctx.send_to_dlq(event, repr(exc), agent)


def register(ctx: AppContext) -> None:
    async def dead_letter(events, exc: Exception) -> None:
        await dead_letter_all(ctx, events, repr(exc), "shadow")

    stream = ctx.hops.stream(ctx.topics.results.get_topic_name())

    @ctx.task(name="results")
    async def results() -> None:
        await ctx.registry.ready.wait()
        stream.rewind()  # a restart reads again what the last run did not ack
        await run_batches(ctx, stream, "results", lambda event: read_result(ctx, event),
                          on_send_error=dead_letter, after=lambda: publish_join_metrics(ctx))
