"""`replay`: archived input events from ClickHouse, re-sent to one version as a run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agents.errors import ReviewbusError, StoreBusy
from agents.settings import Settings
from infra import queries_cli as q
from infra.config_file import load_config
from infra.queries import Query
from schemas import Registry

from ..registered import unlisted_specs
from .bus import check_version, new_run_id, replay_requests, send_replay
from .common import Quiet, current_registry, store_for


def replay_targets(registry: Registry, config) -> list[str]:
    """Versions a replay may go to: the versions file's, and those registered at run time
    (`reviewbus train`, `versions register`) and not archived."""
    return [v.id for v in config.versions] + [s.id for s in unlisted_specs(registry, config)]


def replay(settings: Settings, version_id: str, *, since: datetime | None = None,
           until: datetime | None = None, limit: int | None = None, wait: bool = False,
           timeout: float = 600.0, progress: Callable[[int, str], Any] = Quiet) -> str:
    """Send the range's archived requests to `version_id` as a new run; returns its id."""
    if limit is not None and limit < 1:
        raise ReviewbusError(f"--limit must be at least 1, got {limit}")
    config = load_config(settings.config)
    check_version(version_id, replay_targets(current_registry(settings), config))
    query = q.archive(config.task, since, until, limit)
    with store_for(settings) as store:
        rows = store.query(query.sql, query.params).as_dicts()
    if not rows:
        raise ReviewbusError("no archived input events in that range (submit some first)")
    run_id = new_run_id()
    requests = replay_requests(rows, version_id, run_id)
    bar = progress(len(requests), f"replay {run_id} -> {version_id}: sent")
    try:
        asyncio.run(send_replay(settings, version_id, requests, bar.update))
    finally:
        bar.close()
    if wait:
        accepted = [r.accepted_at for r in requests if r.accepted_at is not None]
        count = q.run_count(config.task, version_id, run_id, min(accepted), max(accepted))
        wait_for_run(settings, count, run_id, len(requests), timeout, progress)
    return run_id


def next_poll_s(done: int, expected: int, gained: int, poll_s: float) -> float:
    """The pause before the next count: `poll_s` while the run is far from its end, a quarter
    of it once one pause has stored at least what is left (`gained`: the most one pause
    stored so far; the sink stores in batches, so the rest is likely one batch away). A long
    replay then ends about poll_s / 4 after its last row is stored instead of up to poll_s,
    without counting four times as often throughout (each count is a query on the worker). A
    run stored in one batch never sees a gain before its end: it is counted every poll_s."""
    if gained > 0 and expected - done <= gained:
        return poll_s / 4
    return poll_s


def wait_for_run(settings: Settings, count: Query, run_id: str, expected: int, timeout: float,
                 progress: Callable[[int, str], Any] = Quiet, poll_s: float = 0.2) -> None:
    """Until `count` (q.run_count) says `expected` results of the run are stored. The running
    worker's store is opened once for every poll (each open is a round trip of its own); the
    local store, used only when no worker holds it, is closed after each poll so a worker can
    start meanwhile."""
    from infra.store import Store, open_store

    bar = progress(expected, f"replay {run_id}: stored")
    deadline = time.monotonic() + timeout
    store, done, before, most = None, 0, 0, 0
    try:
        while True:
            store = store or open_store(settings)
            try:
                done = int(store.query(count.sql, count.params).rows[0][0])
            except StoreBusy:  # the worker is restarting: open whichever store answers next
                store = None
            if isinstance(store, Store):
                store.close()
                store = None
            bar.set(done)
            if done >= expected:
                return
            if time.monotonic() > deadline:
                raise ReviewbusError(f"replay {run_id}: {done} of {expected} results "
                                     f"stored after {timeout:g} s")
            most, before = max(most, done - before), done
            time.sleep(next_poll_s(done, expected, most, poll_s))
    finally:
        if isinstance(store, Store):
            store.close()
        bar.close()
