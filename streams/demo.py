"""The main job: start the embedded stack, review a repository's last commits, compare."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agents.config import load_config
from agents.rotation import quote
from agents.routing import answering_versions, cohort_key
from agents.settings import Settings
from infra.gitsource import commit_events
from schemas import CommitEvent, Registry

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
        answering = answers_by_request(settings, events)
        versions = sorted({v for vs in answering.values() for v in vs})
        print(f"reviewing the last {len(events)} commits of {repo.resolve()} "
              f"with {len(versions)} versions ...", flush=True)
        unlisted = [v for v in versions if config.spec(v) is None]
        if unlisted:
            print(f"  also answering, registered earlier and not in {settings.config or 'the default file'}: "
                  f"{', '.join(unlisted)} (`reviewbus versions archive ID` retires one)", flush=True)
        bar = Progress(len(events), "findings")
        results = asyncio.run(submit(settings, events, wait=True, timeout=900,
                                     on_result=lambda r: bar.update()))
        bar.close()
        print()
        print(summary(results))
        print()
        wait_for_interactions(settings, config.task, [e.event_id for e in events],
                              sum(len(vs) for vs in answering.values()))
        from .cli import store_for

        with store_for(settings) as store:
            rows = compare(store, config.task, window_s=7 * 86400)
        print("version comparison (ClickHouse, last 7 days):")
        print(render_table(rows, COMPARE_COLUMNS))
    finally:
        if not keep and not was_running:
            down(settings)
    return 0


def expected_answers(registry: Registry, events: list[CommitEvent], served: set[str]
                     ) -> dict[str, list[str]]:
    """Per event id, the versions that will answer it: its route (the serving version and its
    mirrors, as the router plans them) among the versions a worker serves."""
    return {e.event_id: [v for v in answering_versions(registry, cohort_key(e.repo, e.pull_request, e.sha),
                                                       repo=e.repo) if v in served]
            for e in events}


def answers_by_request(settings: Settings, events: list[CommitEvent]) -> dict[str, list[str]]:
    """expected_answers with the live registry (versions registered by earlier runs answer
    too, not only the file's) and the versions whose inference topic a worker created."""
    from infra.broker import find_broker
    from infra.kafka import existing_topics

    from . import names
    from .cli import current_registry

    registry = current_registry(settings)
    topics = asyncio.run(existing_topics(settings, find_broker(settings).address))
    served = {v for v in registry.versions if names.inference_topic(settings, v) in topics}
    return expected_answers(registry, events, served)


def wait_for_interactions(settings: Settings, task: str, request_ids: list[str],
                          expected: int, timeout: float = 300.0) -> None:
    """Shadow answers land a little after the served ones; wait until all are stored."""
    from .cli import store_for

    ids = ", ".join(quote(i) for i in request_ids)
    sql = (f"SELECT count() FROM interactions FINAL WHERE task = {quote(task)} "
           f"AND request_id IN ({ids}) AND run_id = ''")
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
