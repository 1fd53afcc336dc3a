"""The main job: start the embedded stack, review a repository's last commits, compare."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agents.config import load_config
from agents.rotation import quote
from agents.settings import Settings
from infra.gitsource import commit_events

from .client import submit
from .control import down, up, worker_info
from .output import summary
from .progress import Progress
from .reports import COMPARE_COLUMNS, compare, render_table


def demo(settings: Settings, repo: Path, last: int, keep: bool) -> int:
    config = load_config(settings.config)
    was_running = worker_info(settings) is not None
    print("starting the embedded stack (broker, ClickHouse, worker) ...", flush=True)
    up(settings, detach=True)
    try:
        events = commit_events(repo, None, last=last)
        print(f"reviewing the last {len(events)} commits of {repo.resolve()} "
              f"with {len(config.versions)} versions ...", flush=True)
        bar = Progress(len(events), "findings")
        results = asyncio.run(submit(settings, events, wait=True, timeout=900,
                                     on_result=lambda r: bar.update()))
        bar.close()
        print()
        print(summary(results))
        print()
        wait_for_interactions(settings, config.task, [e.event_id for e in events],
                              len(config.versions))
        from .cli import store_for

        with store_for(settings) as store:
            rows = compare(store, config.task, window_s=7 * 86400)
        print("version comparison (ClickHouse, last 7 days):")
        print(render_table(rows, COMPARE_COLUMNS))
    finally:
        if not keep and not was_running:
            down(settings)
    return 0


def wait_for_interactions(settings: Settings, task: str, request_ids: list[str],
                          versions: int, timeout: float = 300.0) -> None:
    """Shadow answers land a little after the served ones; wait until all are stored."""
    from .cli import store_for

    ids = ", ".join(quote(i) for i in request_ids)
    sql = (f"SELECT count() FROM interactions FINAL WHERE task = {quote(task)} "
           f"AND request_id IN ({ids}) AND run_id = ''")
    expected = len(request_ids) * versions
    deadline = time.monotonic() + timeout
    bar = Progress(expected, "stored ")
    while time.monotonic() < deadline:
        with store_for(settings) as store:
            done = int(store.query(sql).rows[0][0])
        bar.set(done)
        if done >= expected:
            break
        time.sleep(0.5)
    bar.close()
