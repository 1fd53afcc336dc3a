"""Lifecycle events of several reviewbus versions: each event folds by the rule it was decided
on, also when the history comes back from ClickHouse (after a broker restart), and an event
written by a newer reviewbus stops an older worker's fold instead of being folded by the
wrong rule (agents/registry.py `apply_event`, streams/flows/registry.py)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from types import SimpleNamespace

import pytest

from agents.lifecycle_commands import register_events
from agents.registry import apply_event, fold, fold_annotated
from infra.readback import registry_from_store
from infra.store import Store
from schemas import LifecycleAction, LifecycleEvent, VersionSpec, VersionState
from streams.context import RegistryView
from streams.flows.registry import bootstrap_events, newer_schema_of

S = VersionState
TASK = "code-review"
A = "org/a"


def history(schema_version: int = 1) -> list[LifecycleEvent]:
    """base (global) stable, la (org/a) promoted to stable by events of `schema_version`: by
    the rule of version 1 that deprecated base, by that of version 2 it does not."""
    specs = [VersionSpec(id="base", backend="fake", initial_state=S.stable),
             VersionSpec(id="la", backend="fake", initial_state=S.shadow, repos=[A])]
    events = register_events(specs, fold(TASK, []))
    reg = fold(TASK, events)
    for to, traffic in ((S.canary, 50.0), (S.stable, 0.0)):
        event = LifecycleEvent(task=TASK, version_id="la", action=LifecycleAction.promote,
                               schema_version=schema_version, from_state=reg.versions["la"].state,
                               to_state=to, traffic_percent=traffic, actor="test",
                               position=reg.applied)
        reg, why = apply_event(reg, event)
        assert why is None
        events.append(event)
    return events


def states(reg) -> dict[str, str]:
    return {v: e.state.value for v, e in sorted(reg.versions.items())}


def newer(after: LifecycleEvent, version: int = 3) -> LifecycleEvent:
    return LifecycleEvent(task=TASK, version_id="base", action=LifecycleAction.pause,
                          schema_version=version, from_state=S.stable, to_state=S.stable,
                          actor="newer-reviewbus",
                          occurred_at=after.occurred_at + timedelta(milliseconds=1))


def test_the_store_gives_back_each_event_with_its_schema_version(store):
    old, new = history(1), history(2)
    assert states(fold(TASK, old)) == {"base": "deprecated", "la": "stable"}
    assert states(fold(TASK, new)) == {"base": "stable", "la": "stable"}
    store.insert_events(old)
    rows = store.query("SELECT event_id, schema_version FROM lifecycle FINAL").as_dicts()
    assert {r["event_id"]: r["schema_version"] for r in rows} == {
        e.event_id: e.schema_version for e in old}
    # restored after a broker restart, the version 1 history folds as its workers folded it
    # (without the column it came back as version 2: base stayed stable beside la)
    assert states(registry_from_store(store, TASK)) == {"base": "deprecated", "la": "stable"}


def test_an_event_of_a_newer_reviewbus_stops_the_fold():
    events = history(2)
    after = LifecycleEvent(task=TASK, version_id="la", action=LifecycleAction.pause,
                           from_state=S.stable, to_state=S.stable, actor="test")
    topic = [*events, newer(events[-1]), after]
    reg, notes = fold_annotated(TASK, topic)
    assert [why.code.value if why else None for _, why in notes][-3:] == [
        None, "newer_schema", "behind"]
    assert reg.behind is not None and "schema version 3" in reg.behind
    assert "upgrade this worker" in reg.behind
    prefix = fold(TASK, events)
    assert (states(reg), reg.applied) == (states(prefix), prefix.applied)
    assert not reg.versions["la"].paused  # the event after it was not folded either
    # a worker's view does the same, and tells its /health (streams/web.py) why
    view = RegistryView(TASK)
    for event in topic:
        view.apply(event)
    assert view.registry.behind == reg.behind and states(view.registry) == states(prefix)
    view.halt("another reason")  # the first reason stays
    assert view.registry.behind == reg.behind


def test_an_unreadable_event_of_a_newer_reviewbus_is_told_from_garbage():
    teleport = {"schema_version": 3, "task": TASK, "version_id": "base", "action": "teleport",
                "to_state": "orbit"}
    assert newer_schema_of(json.dumps(teleport).encode()) == 3
    assert newer_schema_of(json.dumps({**teleport, "schema_version": 2}).encode()) is None
    assert newer_schema_of(b"not json") is None and newer_schema_of(b"[3]") is None
    assert newer_schema_of(None) is None


def _ctx(store: Store, versions: list[VersionSpec]):
    async def query(sql, params=None):
        return store.query(sql, params)

    return SimpleNamespace(store=SimpleNamespace(query=query), registry=RegistryView(TASK),
                           config=SimpleNamespace(task=TASK, versions=versions, blocklist=[]))


def test_a_worker_restoring_a_newer_history_folds_what_it_can_and_publishes_nothing(store):
    events = history(2)
    store.insert_events([*events, newer(events[-1])])
    spec = VersionSpec(id="extra", backend="fake", initial_state=S.shadow)
    ctx = _ctx(store, [spec])
    # publishing a prefix would make an upgraded worker think the topic has the history
    assert asyncio.run(bootstrap_events(ctx)) == []
    assert "schema version 3" in ctx.registry.registry.behind
    assert states(ctx.registry.registry) == states(fold(TASK, events))


def test_a_worker_restoring_a_history_it_can_read_publishes_it(store):
    events = history(2)
    store.insert_events(events)
    ctx = _ctx(store, [VersionSpec(id="extra", backend="fake", initial_state=S.shadow)])
    published = asyncio.run(bootstrap_events(ctx))
    assert {e.event_id for e in published[:len(events)]} == {e.event_id for e in events}
    assert [e.version_id for e in published[len(events):]] == ["extra"]
    assert ctx.registry.registry.behind is None


class _Untouchable:
    """A store or topic that fails the test when anything reads or writes it."""

    def __getattr__(self, name):
        raise AssertionError(f"a frozen worker used {name}")


def _frozen_ctx(registry) -> SimpleNamespace:
    view = RegistryView(TASK)
    view.registry = registry
    view.ready.set()
    view.halt("lifecycle event x has schema version 3")
    from agents.feedback import FeedbackFilterConfig
    from agents.learning.live import LearnerAgentConfig

    return SimpleNamespace(
        registry=view, store=_Untouchable(), topics=_Untouchable(), quarantined={},
        config=SimpleNamespace(task=TASK, versions=[], blocklist=[],
                               feedback=FeedbackFilterConfig(enabled=True),
                               learner=LearnerAgentConfig(enabled=True),
                               quarantine=SimpleNamespace(retest=True)))


def test_a_frozen_worker_decides_nothing():
    """Each lifecycle event would be decided on the registry as it was before the newer event
    (a rollback target, a spec update, a refit): none is sent, and nothing is even measured."""
    from streams.flows import feedback, learner, quarantine, rotation

    reg = fold(TASK, history(2))
    live = SimpleNamespace(registry=RegistryView(TASK),
                           topics=SimpleNamespace(lifecycle="lifecycle", healing="healing"))
    live.registry.registry = reg
    assert quarantine.quarantine_events(live, "la", "error_rate", {})  # unfrozen: it would
    ctx = _frozen_ctx(reg)
    assert quarantine.quarantine_events(ctx, "la", "error_rate", {}) == []
    assert asyncio.run(rotation.rotate_once(ctx)) == []
    assert asyncio.run(feedback.update_filters(ctx)) == []
    assert asyncio.run(learner.refit_due(ctx)) == []
    assert asyncio.run(quarantine.check_retests(ctx)) is None
    assert asyncio.run(bootstrap_events(ctx)) == []  # not even the versions file's


def test_the_cli_refuses_a_history_a_newer_reviewbus_wrote(store):
    """`reviewbus versions`, `status` and friends fold the stored history when no broker
    runs: a newer event there is a one-line error, not a registry the workers do not have."""
    from agents.errors import ReviewbusError

    events = history(2)
    store.insert_events([*events, newer(events[-1])])
    reg = registry_from_store(store, TASK)
    assert "schema version 3" in reg.behind and states(reg) == states(fold(TASK, events))
    with pytest.raises(ReviewbusError, match="schema version 3"):
        from streams.services import common

        original, common.store_for = common.store_for, lambda _s: _Borrowed(store)
        try:
            common.current_registry(_no_broker_settings())
        finally:
            common.store_for = original


class _Borrowed:
    def __init__(self, store):
        self.store = store

    def __enter__(self):
        return self.store

    def __exit__(self, *exc):
        return False


def _no_broker_settings():
    from agents.settings import Settings

    return Settings(kafka="127.0.0.1:1")


@pytest.mark.integration
def test_manual_commands_refuse_a_topic_a_newer_reviewbus_wrote(broker, tmp_path, monkeypatch):
    from agents.errors import ReviewbusError
    from agents.settings import Settings
    from streams import names
    from streams.services.common import publish
    from streams.services.lifecycle import read_registry

    from .conftest import isolate_env

    isolate_env(monkeypatch, tmp_path / "home", "upg")
    settings = Settings(kafka=broker)
    topic = names.topic(settings, "lifecycle")
    events = history(2)
    teleport = {"schema_version": 3, "task": TASK, "version_id": "base", "action": "teleport"}
    from infra.kafka import ensure_topics

    asyncio.run(ensure_topics(settings, broker, {topic: 1}))  # the lifecycle topic: one partition
    asyncio.run(publish(settings, topic, [(None, e.model_dump_json().encode()) for e in events]))
    assert states(read_registry(settings, TASK)[0]) == states(fold(TASK, events))
    asyncio.run(publish(settings, topic, [(None, json.dumps(teleport).encode())]))
    with pytest.raises(ReviewbusError, match="schema version 3.*upgrade"):
        read_registry(settings, TASK)
