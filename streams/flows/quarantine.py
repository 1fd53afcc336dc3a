"""quarantine: a failing version gets no more traffic, with the trigger, evidence and one-line
root cause on record (QuarantineEvent + LifecycleEvent); it leaves by a half-open re-test.

- On every result (read once for this and the shadow join by streams/flows/results.py): the
  health tracker (agents/health.py) checks the five triggers of the design; the first crossed
  one quarantines the version. A quarantined canary gives its
  traffic back to stable, a quarantined stable gives way to the previous stable when there is
  one (the registry fold does that); both are also recorded as a `rollback` HealingAction.
- At start: crash loops. Every batch leaves a marker file while it runs (CrashGuard); the
  markers of a dead worker say which versions were in flight when it died. A version that was
  alone in flight at `crash_loop_restarts` deaths within the window is quarantined before any
  batch runs again; a request in flight at `poison_after_crashes` deaths is dead-lettered for
  that version (and healed elsewhere) instead of killing the worker again. The versions in
  flight at the last death run their next batch alone, so the next death is attributable.
- Leader timer: candidates whose SLO error budget is exhausted are quarantined
  (`error_budget`); quarantined versions are re-tested after `retest_after_s` (doubling after
  each failure): a sample of archived traffic is replayed to them (run `retest-...`) and they
  go back to shadow only if it passes. Versions quarantined for a crash loop are not re-tested
  automatically (the re-test could kill the worker again): `reviewbus versions restore` does it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from agents import slo
from agents.health import (
    Outcome,
    crash_verdicts,
    retest_backoff,
    retest_verdict,
    root_cause,
    suspects_of,
)
from agents.registry import restore_target
from agents.routing import baseline_of, outside_of, scope_of, stable_version
from infra import queries
from infra.crash_markers import collect_deaths
from schemas import (
    HealingAction,
    LifecycleAction,
    LifecycleEvent,
    QuarantineEvent,
    Registry,
    Role,
    Status,
    VersionState,
)

from ..context import AppContext, emit, log
from ..metrics import EVENTS, LIFECYCLE
from .router import inference_topic_of

NO_TRAFFIC = (VersionState.quarantined, VersionState.archived)
CANDIDATES = (VersionState.shadow, VersionState.canary)


# ---- quarantine events ---------------------------------------------------------------------


def _event_id(task: str, version_id: str, applied: int) -> str:
    # Same id from every worker and every repeat: the registry fold keeps only the first.
    return hashlib.sha256(f"{task}|{version_id}|quarantine|{applied}".encode()).hexdigest()[:32]


def quarantine_events(ctx: AppContext, version_id: str, trigger: str, evidence: dict) -> list:
    """LifecycleEvent + QuarantineEvent (+ a rollback HealingAction for a canary or stable)."""
    registry = ctx.registry.registry
    entry = registry.versions.get(version_id)
    if entry is None or entry.state in NO_TRAFFIC or ctx.registry.frozen:
        return []
    event_id = _event_id(registry.task, version_id, registry.applied)
    cause = root_cause(trigger, evidence)
    evidence = {**evidence, "trigger": trigger, "state": entry.state.value}
    out: list = [
        (ctx.topics.lifecycle, version_id, LifecycleEvent(
            event_id=event_id, task=registry.task, version_id=version_id,
            action=LifecycleAction.quarantine, from_state=entry.state,
            to_state=VersionState.quarantined, actor="quarantine", reason=cause,
            evidence=evidence)),
        (ctx.topics.healing, version_id, QuarantineEvent(
            event_id=f"q-{event_id}", task=registry.task, version_id=version_id,
            trigger=trigger, root_cause=cause, evidence=evidence)),
    ]
    target = None
    if entry.state == VersionState.canary:
        target = baseline_of(registry, version_id)
    elif entry.state == VersionState.stable:
        # what the fold restores; a scoped stable version with nothing of its own to restore
        # hands its repositories back to the global one
        target = restore_target(registry, version_id) or (
            stable_version(registry) if entry.spec.repos else None)
    if target is not None:
        out.append((ctx.topics.healing, version_id, HealingAction(
            event_id=f"rb-{event_id}", task=registry.task, action="rollback",
            version_id=version_id, target_version=target,
            reason=f"{entry.state.value} {version_id} quarantined, {target} serves its "
                   f"traffic: {cause}"[:500])))
    return out


async def quarantine(ctx: AppContext, version_id: str, trigger: str, evidence: dict) -> bool:
    outputs = quarantine_events(ctx, version_id, trigger, evidence)
    if not outputs:
        return False
    await emit(outputs)
    # Fold it here at once (the topic copy is then a duplicate): no batch of a quarantined
    # version may start in the meantime.
    ctx.registry.apply(outputs[0][2])
    LIFECYCLE.labels(action="quarantine").inc()
    EVENTS.labels(agent="quarantine", outcome=f"quarantined:{trigger}").inc()
    log.warning("quarantined %s: %s", version_id, outputs[1][2].root_cause)
    return True


# ---- crash loops -----------------------------------------------------------------------------


async def crash_check(ctx: AppContext) -> None:
    """Before any batch runs: attribute the last worker deaths, quarantine crash loops."""
    q = ctx.config.quarantine
    try:
        history, new = await asyncio.to_thread(
            collect_deaths, ctx.crash_guard.directory, ctx.settings.home / "crashes.json",
            max(q.crash_loop_window_s, 3600.0), ctx.crash_guard.prefix)
        looping, poison = crash_verdicts(history, time.time(), restarts=q.crash_loop_restarts,
                                         window_s=q.crash_loop_window_s,
                                         poison_after=q.poison_after_crashes)
        ctx.crash_guard.poison = poison
        ctx.crash_guard.suspects = suspects_of(new)
        if new:
            log.warning("the last worker died with batches in flight: %s; those versions run "
                        "their next batch alone", [e["inflight"] for e in new])
        if poison:
            log.warning("poison requests (in flight at %d deaths): %s",
                        q.poison_after_crashes, {v: sorted(r) for v, r in poison.items()})
        await ctx.registry.ready.wait()
        if "crash_loop" in q.triggers:
            for version_id, evidence in sorted(looping.items()):
                await quarantine(ctx, version_id, "crash_loop", evidence)
    except Exception:
        log.exception("crash-loop check failed; inference goes on")
    finally:
        ctx.crash_guard.checked.set()


# ---- the results stream ----------------------------------------------------------------------


def outcome_of(head: dict) -> Outcome:
    """The health tracker's view of one result, from its JSON read with orjson (the model is
    not built: streams/flows/results.py reads each result once for the join and this)."""
    change_type = head.get("change_type") or {}
    return Outcome.of(str(head.get("status")), float(head.get("latency_ms") or 0.0),
                      label=head.get("label"), predicted=change_type.get("label"),
                      error=head.get("error"), request_id=head.get("request_id"))


async def judge(ctx: AppContext, head: dict) -> None:
    """One result: observed by the health tracker; a verdict quarantines (rare: awaited)."""
    if head.get("run_id"):  # replays and re-tests measure, they do not judge
        return
    registry = ctx.registry.registry
    version_id = head.get("version_id")
    entry = registry.versions.get(version_id) if isinstance(version_id, str) else None
    if entry is None or entry.state in NO_TRAFFIC:
        return
    # A version scoped to repositories is judged against the stable version that serves them
    # (a scoped stable version against none: it is theirs), on their requests only.
    scope = scope_of(registry, version_id)
    repo = head.get("repo")
    # the stable side over the repositories it takes part in (a narrower stable's left out)
    judged = scope - outside_of(registry, version_id) if scope else scope
    verdict = ctx.health.observe(version_id, outcome_of(head),
                                 stable=baseline_of(registry, version_id), scope=judged,
                                 repo=repo if isinstance(repo, str) else None,
                                 repo_baselines=scoped_repos(registry))
    if verdict is not None:
        trigger, evidence = verdict
        if head.get("status") != Status.ok.value:
            evidence["last_error"] = (head.get("error") or str(head.get("status")))[:300]
        await quarantine(ctx, version_id, trigger, evidence)


def scoped_repos(registry: Registry) -> frozenset[str]:
    """The repositories some version not archived is scoped to."""
    return frozenset(r for e in registry.versions.values()
                     if e.state != VersionState.archived for r in e.spec.repos)


# ---- registry changes ------------------------------------------------------------------------


@dataclass
class Quarantined:
    since: float  # monotonic
    trigger: str = ""
    failed_retests: int = 0
    next_retest: float = 0.0  # monotonic
    run_id: str | None = None
    sent: int = 0
    started: float = 0.0
    accepted_from: datetime | None = None  # the oldest accepted time of the re-test's sample


def on_lifecycle(ctx: AppContext, event: LifecycleEvent) -> None:
    vid, _quarantined = event.version_id, ctx.quarantined
    if event.to_state == VersionState.quarantined and event.action == LifecycleAction.quarantine:
        now = time.monotonic()
        trigger = str((event.evidence or {}).get("trigger", ""))
        _quarantined[vid] = Quarantined(since=now, trigger=trigger,
                                        next_retest=now + ctx.config.quarantine.retest_after_s)
    elif event.from_state == VersionState.quarantined or (
            event.action == LifecycleAction.restore):
        _quarantined.pop(vid, None)
        ctx.health.reset(vid)
        ctx.breakers.reset(vid)
        log.warning("%s left quarantine (%s): health and circuit reset", vid, event.reason)


# ---- the leader's timer: error budgets and re-tests ----------------------------------------


async def check_budgets(ctx: AppContext) -> list[str]:
    """Quarantine candidates whose SLO error budget is exhausted; the versions quarantined."""
    if "error_budget" not in ctx.config.quarantine.triggers or ctx.store is None:
        return []
    registry = ctx.registry.registry
    candidates = sorted(v for v, e in registry.versions.items() if e.state in CANDIDATES)
    if not candidates:
        return []
    query = queries.slo(registry.task, ctx.config.slo, candidates, ctx.settings.timer_max_lag_s,
                        slo.since_of(registry))
    sql = query.text()
    rows = (await ctx.store.query(query.sql, query.params)).as_dicts()
    done = []
    for report in slo.reports(rows, candidates, ctx.config.slo):
        if report["status"] == "exhausted" and report["version_id"] in candidates:
            evidence = {**report, "query": sql, "window_s": ctx.config.slo.window_s}
            if await quarantine(ctx, report["version_id"], "error_budget", evidence):
                done.append(report["version_id"])
    return done


async def start_retest(ctx: AppContext, version_id: str, state: Quarantined) -> None:
    from ..services.bus import replay_requests

    q = ctx.config.quarantine
    # a version scoped to repositories is re-tested on their requests only, and no version on
    # those of a repository that a narrower stable version than its baseline serves
    registry = ctx.registry.registry
    sample = queries.archive_sample(ctx.config.task, q.retest_sample,
                                    ctx.settings.retest_sample_window_s,
                                    sorted(scope_of(registry, version_id)),
                                    exclude=sorted(outside_of(registry, version_id)))
    rows = (await ctx.store.query(sample.sql, sample.params)).as_dicts()
    if not rows:
        state.next_retest = time.monotonic() + q.retest_after_s
        log.info("re-test of %s postponed: no archived traffic yet", version_id)
        return
    run_id = f"retest-{version_id}-{int(time.time())}-{state.failed_retests}"
    requests = replay_requests(rows, version_id, run_id)
    topic = inference_topic_of(ctx, version_id, Role.replay)
    if topic is None:
        return
    await emit([(topic, r.request_id, r.model_copy(
        update={"event_id": f"{run_id}-{r.request_id}"})) for r in requests])
    state.run_id, state.sent, state.started = run_id, len(requests), time.monotonic()
    # Its results carry the requests' accepted times: the oldest bounds their read.
    state.accepted_from = min(datetime.fromisoformat(r["occurred_at"]) for r in rows)
    log.warning("re-testing quarantined %s: %d archived requests replayed as %s",
                version_id, len(requests), run_id)


async def finish_retest(ctx: AppContext, version_id: str, state: Quarantined) -> bool:
    """Judge a re-test in flight; True once it is decided (passed or failed)."""
    q = ctx.config.quarantine
    accepted_from = state.accepted_from or datetime.fromtimestamp(0, UTC)
    query = queries.retest_results(ctx.config.task, version_id, state.run_id, accepted_from)
    rows = (await ctx.store.query(query.sql, query.params)).as_dicts()
    timed_out = time.monotonic() - state.started > q.retest_timeout_s
    if len(rows) < state.sent and not timed_out:
        return False
    registry = ctx.registry.registry
    verdict = retest_verdict(rows, state.sent, min_success_rate=q.retest_min_success_rate,
                             latency_ms=ctx.config.slo.objectives(version_id).latency_ms,
                             stable_accuracy=await stable_accuracy_on(
                                 ctx, registry, [r["request_id"] for r in rows], accepted_from,
                                 scope_of(registry, version_id)),
                             max_accuracy_drop=q.accuracy_max_drop)
    verdict["run_id"] = state.run_id
    digest = hashlib.sha256(f"{registry.task}|{version_id}|retest|{state.run_id}".encode())
    event_id = digest.hexdigest()[:32]
    if verdict["passed"]:
        reason = f"half-open re-test passed: {verdict['reason']} (run {state.run_id})"
        await emit([
            (ctx.topics.lifecycle, version_id, LifecycleEvent(
                event_id=event_id, task=registry.task, version_id=version_id,
                action=LifecycleAction.restore, from_state=VersionState.quarantined,
                to_state=VersionState.shadow, actor="quarantine", reason=reason,
                evidence=verdict, position=registry.applied)),
            (ctx.topics.healing, version_id, HealingAction(
                event_id=f"rs-{event_id}", task=registry.task, action="restore",
                version_id=version_id, reason=reason[:500])),
        ])
        LIFECYCLE.labels(action="restore").inc()
        log.warning("%s passed its re-test: back to shadow", version_id)
    else:
        state.failed_retests += 1
        wait = retest_backoff(state.failed_retests, max(q.retest_after_s, 1.0),
                              q.retest_max_backoff_s)
        state.next_retest = time.monotonic() + wait
        await emit([(ctx.topics.healing, version_id, HealingAction(
            event_id=f"rf-{event_id}", task=registry.task, action="retest_failed",
            version_id=version_id,
            reason=f"half-open re-test failed: {verdict['reason']} (run {state.run_id}); "
                   f"next in {wait:.0f} s"[:500]))])
        log.warning("%s failed its re-test (%s); next in %.0f s", version_id,
                    verdict["reason"], wait)
    state.run_id = None
    return True


async def stable_accuracy_on(ctx: AppContext, registry, request_ids: list[str],
                             accepted_from: datetime, scope: frozenset[str] = frozenset()
                             ) -> float | None:
    """The stable version's live change-type accuracy on these requests (None: no labels);
    they were accepted at accepted_from or later. `scope`: the re-tested version's
    repositories, whose stable version is the baseline."""
    stable = stable_version(registry, scope=scope)
    if stable is None or not request_ids:
        return None
    query = queries.stable_accuracy(registry.task, stable, request_ids, accepted_from)
    rows = (await ctx.store.query(query.sql, query.params)).as_dicts()
    n = int(rows[0]["n"]) if rows else 0
    return int(rows[0]["hits"]) / n if n else None


async def check_retests(ctx: AppContext) -> None:
    q = ctx.config.quarantine
    if not q.retest or ctx.store is None or ctx.registry.frozen:
        return
    registry, _quarantined = ctx.registry.registry, ctx.quarantined
    now = time.monotonic()
    for vid, entry in sorted(registry.versions.items()):
        if entry.state != VersionState.quarantined:
            continue
        state = _quarantined.get(vid)
        if state is None:  # quarantined before this worker started
            state = _quarantined[vid] = Quarantined(since=now, next_retest=now + q.retest_after_s)
        if state.trigger == "crash_loop":
            continue
        if state.run_id is not None:
            await finish_retest(ctx, vid, state)
        elif now >= state.next_retest:
            await start_retest(ctx, vid, state)


def register(ctx: AppContext) -> None:
    ctx.registry.listeners.append(lambda event: on_lifecycle(ctx, event))

    @ctx.task(name="crash_check")
    async def crash_check_task() -> None:
        await crash_check(ctx)

    @ctx.timer(ctx.config.quarantine.check_interval_s, name="quarantine_retests", on_leader=True)
    async def quarantine_timer() -> None:
        if ctx.registry.ready.is_set():
            await check_retests(ctx)

    @ctx.timer(ctx.config.slo.check_interval_s, name="error_budgets", on_leader=True)
    async def budget_timer() -> None:
        if ctx.registry.ready.is_set():
            await check_budgets(ctx)


__all__ = ["NO_TRAFFIC", "quarantine", "quarantine_events", "register"]
