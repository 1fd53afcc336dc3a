"""The main job: start the embedded stack, review a repository's last commits, compare."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from agents.config import load_config
from agents.rotation import quote
from agents.routing import answering_versions, cohort_key
from agents.settings import Settings
from infra.gitsource import commit_events
from schemas import CommitEvent, Registry, VersionState

from .client import served_versions, submit
from .control import down, up, worker_health, worker_info
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
        wait_for_interactions(settings, config.task, answering)
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

    from .cli import current_registry

    registry = current_registry(settings)
    served = asyncio.run(served_versions(settings, find_broker(settings).address,
                                         registry.versions))
    return expected_answers(registry, events, served)


# the states the router sends requests to (agents.routing.plan_route)
ANSWERING_STATES = {s.value for s in (VersionState.stable, VersionState.canary, VersionState.shadow)}


def stopped_answering(health: dict | None) -> dict[str, str]:
    """{version: why} for the versions the worker will send no more requests to: no longer in
    an answering state (quarantined after failures, archived, ...) or behind an open circuit.
    Their shadow copies still queued are dropped, so their missing answers never come."""
    if not health:
        return {}
    out = {v: "circuit open" for v in health.get("open_circuits") or []}
    out.update({v: s for v, s in (health.get("versions") or {}).items() if s not in ANSWERING_STATES})
    return out


def outstanding(expected: dict[str, int], stored: dict[str, int], given_up: Iterable[str]) -> int:
    """Answers still to wait for: every version's missing ones, except those given up on."""
    skip = set(given_up)
    return sum(max(0, n - stored.get(v, 0)) for v, n in expected.items() if v not in skip)


def wait_for_interactions(settings: Settings, task: str, answering: dict[str, list[str]],
                          timeout: float = 300.0, health_every_s: float = 2.0) -> None:
    """Shadow answers land a little after the served ones; wait until all are stored, or
    until the versions still missing some stopped answering. Says what is missing."""
    from .cli import store_for

    expected = Counter(v for versions in answering.values() for v in versions)
    ids = ", ".join(quote(i) for i in answering)
    sql = (f"SELECT version_id, count() FROM interactions FINAL WHERE task = {quote(task)} "
           f"AND request_id IN ({ids}) AND run_id = '' GROUP BY version_id")
    info = worker_info(settings)
    given_up: dict[str, str] = {}
    stored: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    next_health = 0.0
    bar = Progress(sum(expected.values()), "stored ")
    while time.monotonic() < deadline:
        with store_for(settings) as store:
            stored = {v: int(n) for v, n in store.query(sql).rows}
        bar.set(sum(min(stored.get(v, 0), n) for v, n in expected.items()))
        if info and time.monotonic() >= next_health:
            next_health = time.monotonic() + health_every_s
            for v, why in stopped_answering(worker_health(info)).items():
                if v in expected and stored.get(v, 0) < expected[v]:
                    given_up[v] = why  # the latest reason: a circuit opens, then quarantine
        if outstanding(expected, stored, given_up) == 0:
            break
        time.sleep(0.5)
    bar.close()
    for v, n in sorted(expected.items()):
        if stored.get(v, 0) < n:
            why = given_up.get(v, f"still missing after {timeout:g} s")
            print(f"  {v}: {stored.get(v, 0)} of {n} answers stored ({why})", flush=True)
