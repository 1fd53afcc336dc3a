"""`reviewbus replay`: archived input events from ClickHouse, re-sent to one version as a run."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from agents.config import load_config
from agents.errors import ReviewbusError
from agents.rotation import quote
from agents.settings import Settings
from schemas import Registry

from .client import check_version, new_run_id, replay_requests, send_replay
from .progress import Progress
from .registered import unlisted_specs


def archive_sql(task: str, since: datetime | None, until: datetime | None,
                limit: int | None) -> str:
    where = [f"task = {quote(task)}"]
    if since:
        where.append(f"occurred_at >= toDateTime64({quote(since.isoformat())}, 3, 'UTC')")
    if until:
        where.append(f"occurred_at < toDateTime64({quote(until.isoformat())}, 3, 'UTC')")
    sql = (f"SELECT accepted FROM events_archive FINAL WHERE {' AND '.join(where)} "
           "ORDER BY occurred_at, event_id")
    return sql + (f" LIMIT {int(limit)}" if limit else "")


def run_count_sql(run_id: str) -> str:
    return f"SELECT count() AS n FROM interactions FINAL WHERE run_id = {quote(run_id)}"


def replay_targets(registry: Registry, config) -> list[str]:
    """Versions a replay may go to: the versions file's, and those registered at run time
    (`reviewbus train`, `versions register`) and not archived."""
    return [v.id for v in config.versions] + [s.id for s in unlisted_specs(registry, config)]


def replay(settings: Settings, version_id: str, *, since: datetime | None = None,
           until: datetime | None = None, limit: int | None = None, wait: bool = False,
           timeout: float = 600.0) -> str:
    from .cli import current_registry, store_for

    if limit is not None and limit < 1:
        raise ReviewbusError(f"--limit must be at least 1, got {limit}")
    config = load_config(settings.config)
    check_version(version_id, replay_targets(current_registry(settings), config))
    with store_for(settings) as store:
        rows = store.query(archive_sql(config.task, since, until, limit)).as_dicts()
    if not rows:
        raise ReviewbusError("no archived input events in that range (submit some first)")
    run_id = new_run_id()
    requests = replay_requests(rows, version_id, run_id)
    bar = Progress(len(requests), f"replay {run_id} -> {version_id}: sent")
    try:
        asyncio.run(send_replay(settings, version_id, requests, bar.update))
    finally:
        bar.close()
    if wait:
        wait_for_run(settings, run_id, len(requests), timeout)
    return run_id


def wait_for_run(settings: Settings, run_id: str, expected: int, timeout: float) -> None:
    from .cli import store_for

    bar = Progress(expected, f"replay {run_id}: stored")
    deadline = time.monotonic() + timeout
    try:
        while True:
            with store_for(settings) as store:
                done = int(store.query(run_count_sql(run_id)).rows[0][0])
            bar.set(done)
            if done >= expected:
                return
            if time.monotonic() > deadline:
                raise ReviewbusError(f"replay {run_id}: {done} of {expected} results stored "
                                     f"after {timeout:g} s")
            time.sleep(0.5)
    finally:
        bar.close()
