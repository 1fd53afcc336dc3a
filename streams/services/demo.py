"""The demo's steps: which versions will answer the commits, and waiting until they did.

streams/cli/review.py strings them together: start the stack, submit, wait, compare.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agents.routing import answering_versions, cohort_key
from agents.settings import Settings
from infra import queries_cli as q
from infra.gitsource import commit_events
from schemas import CommitEvent, Registry, VersionState

from .bus import served_versions
from .common import Quiet, bootstrap, current_registry, store_for
from .stack import worker_health, worker_info

# the states the router sends requests to (agents.routing.plan_route)
ANSWERING_STATES = {s.value for s in (VersionState.stable, VersionState.canary, VersionState.shadow)}


def plan(settings: Settings, config, repo: Path, last: int) -> dict[str, Any]:
    """The commits to review, the versions that will answer each, and those of them that the
    versions file does not list (registered by earlier runs)."""
    events = commit_events(repo, None, last=last)
    answering = answers_by_request(settings, events)
    versions = sorted({v for vs in answering.values() for v in vs})
    return {"events": events, "answering": answering, "versions": versions,
            "unlisted": [v for v in versions if config.spec(v) is None]}


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
    registry = current_registry(settings)
    served = asyncio.run(served_versions(settings, bootstrap(settings), registry.versions))
    return expected_answers(registry, events, served)


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
                          timeout: float = 300.0, health_every_s: float = 2.0,
                          progress: Callable[[int, str], Any] = Quiet) -> list[dict[str, Any]]:
    """Shadow answers land a little after the served ones; wait until all are stored, or
    until the versions still missing some stopped answering. Returns what is missing:
    [{version_id, stored, expected, why}]."""
    expected = Counter(v for versions in answering.values() for v in versions)
    query = q.live_answers(task, list(answering))
    info = worker_info(settings)
    given_up: dict[str, str] = {}
    stored: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    next_health = 0.0
    bar = progress(sum(expected.values()), "stored ")
    while time.monotonic() < deadline:
        with store_for(settings) as store:
            stored = {v: int(n) for v, n in store.query(query.sql, query.params).rows}
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
    return [{"version_id": v, "stored": stored.get(v, 0), "expected": n,
             "why": given_up.get(v, f"still missing after {timeout:g} s")}
            for v, n in sorted(expected.items()) if stored.get(v, 0) < n]
