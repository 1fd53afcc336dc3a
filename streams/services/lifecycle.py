"""Lifecycle use cases: manual commands, `register`, `decisions`, `explain`.

Every manual command is a LifecycleEvent with an actor and a reason, published to the
lifecycle topic after it was checked against the current registry (the fold of that topic):
an illegal move is refused with the fold's own one-line reason and nothing is published. The
event carries the registry position it was checked on; the command then reads the topic back
and says whether it applied (it is skipped should another event have got there first).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agents.errors import ConfigError, IllegalTransition, ReviewbusError, StoreError
from agents.lifecycle_commands import (
    abort_pause_again,
    check_applies,
    manual_events,
    register_request,
)
from agents.registry import IN_PLACE, Skip, fold, fold_annotated, newer_schema_of, newer_schema_text
from agents.settings import Settings
from infra import queries_cli as q
from infra.config_file import load_config
from schemas import LifecycleEvent, Registry, VersionSpec

from .. import names
from .common import bootstrap, publish


async def _read_events(settings: Settings, address: str) -> list[LifecycleEvent]:
    from infra.kafka import read_to_end

    raw = await read_to_end(settings, address, names.topic(settings, "lifecycle"))
    out = []
    for value in raw:
        try:
            out.append(LifecycleEvent.model_validate_json(value))
        except ValidationError:
            newer = newer_schema_of(value)
            if newer is not None:  # a newer reviewbus's: the fold stops at it (read_registry)
                raise ReviewbusError(newer_schema_text(newer, "on the topic")) from None
            continue  # the workers dead-letter those; they change nothing
    return out


def read_registry(settings: Settings, task: str) -> tuple[Registry, str]:
    """The registry folded from the lifecycle topic (the broker must be up), and its address."""
    address = bootstrap(settings)
    registry = fold(task, asyncio.run(_read_events(settings, address)))
    if registry.behind is not None:
        raise ReviewbusError(registry.behind)
    if not registry.versions:
        raise ReviewbusError("the lifecycle topic holds no versions yet (has a worker started "
                             "with this REVIEWBUS_TOPIC_PREFIX?)")
    return registry, address


def publish_and_confirm(settings: Settings, address: str, task: str,
                        events: list[LifecycleEvent]) -> tuple[Registry, dict[str, Skip | str | None]]:
    """Publish, read the topic back, and say for each event whether the fold applied it."""
    async def run() -> list[LifecycleEvent]:
        await publish(settings, names.topic(settings, "lifecycle"),
                      [(e.version_id.encode(), e.model_dump_json().encode()) for e in events],
                      address)
        return await _read_events(settings, address)

    registry, annotated = fold_annotated(task, asyncio.run(run()))
    wanted = {e.event_id for e in events}
    outcome: dict[str, Skip | str | None] = {}
    for event, skipped in annotated:
        if event.event_id in wanted and event.event_id not in outcome:
            outcome[event.event_id] = skipped
    return registry, outcome


def describe_state(registry: Registry, version_id: str) -> str:
    entry = registry.versions.get(version_id)
    if entry is None:
        return "unknown"
    text = entry.state.value
    if entry.state.value == "canary":
        text += f" {entry.traffic_percent:g}%"
    return text + (" (paused)" if entry.paused else "")


def _not_applied(command: str, event: LifecycleEvent, skipped: Skip | str) -> IllegalTransition:
    return IllegalTransition(f"{command} {event.version_id}: not applied: "
                             f"{getattr(skipped, 'text', skipped)}")


def manual(settings: Settings, command: str, version: str | None, *, actor: str, reason: str,
           percent: float | None = None, full: bool = False) -> dict[str, Any]:
    """A manual command (promote, demote, rollback, abort, promote --full, ...): its events
    published, read back and applied, all of them or the command fails naming the first that
    was not."""
    config = load_config(settings.config)
    registry, address = read_registry(settings, config.task)
    events = manual_events(registry, command, version, actor=actor, reason=reason,
                           percent=percent, full=full, canary_steps=config.rotation.canary_steps)
    event = events[0]
    before = describe_state(registry, event.version_id)
    after, outcome = publish_and_confirm(settings, address, config.task, events)
    for _ in range(3):  # an abort whose pause alone came too late: pause again
        retry = abort_pause_again(after, events, outcome)
        if retry is None:
            break
        events = [events[0], retry]
        after, more = publish_and_confirm(settings, address, config.task, [retry])
        outcome.update(more)
    for i, e in enumerate(events):
        skipped = outcome.get(e.event_id, "not found on the topic after publishing")
        if skipped:
            error = _not_applied(command, e, skipped)
            if i:
                error = IllegalTransition(f"{error} (the first {i} of its {len(events)} "
                                          "events applied: it is now "
                                          f"{describe_state(after, e.version_id)})")
            raise error
    stable = next((v for v, e in after.versions.items() if e.state.value == "stable"), None)
    return {"event": event, "events": events, "before": before,
            "after": describe_state(after, event.version_id), "stable": stable,
            "steps": [describe_step(e) for e in events]}


def describe_step(event: LifecycleEvent) -> str:
    if event.action.value in ("pause", "resume"):
        return event.action.value + "d"
    if event.to_state.value == "canary":
        return f"canary {event.traffic_percent:g}%"
    return event.to_state.value


def load_specs(path: Path, task: str) -> list[VersionSpec]:
    """Specs from a YAML file: one spec, a list of specs, or a versions file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if isinstance(data, dict) and "versions" in data:
        task = data.get("task", task)
        data = data["versions"]
    specs = []
    for item in data if isinstance(data, list) else [data]:
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: a version spec must be a mapping, got {type(item).__name__}")
        try:
            specs.append(VersionSpec.model_validate({"task": task, **item}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: {where}: {first['msg']}") from exc
    if not specs:
        raise ConfigError(f"{path} holds no version spec")
    return specs


def register(settings: Settings, file: Path, *, actor: str, reason: str | None
             ) -> list[dict[str, Any]]:
    """Register the specs of a YAML file; per event: its state after, or why it was skipped."""
    config = load_config(settings.config)
    registry, address = read_registry(settings, config.task)
    reason = reason or f"registered from {file}"
    # Several specs: each is checked on the registry the previous ones produce.
    checked: list[LifecycleEvent] = []
    current = registry
    for spec in load_specs(Path(file), config.task):
        event = register_request(current, spec, actor=actor, reason=reason,
                                 static_blocklist=config.blocklist)
        current = check_applies(current, event)
        checked.append(event)
    after, outcome = publish_and_confirm(settings, address, config.task, checked)
    out = []
    for event in checked:
        skipped = outcome.get(event.event_id, "not found on the topic after publishing")
        out.append({"event": event, "state": describe_state(after, event.version_id),
                    "error": _not_applied("register", event, skipped) if skipped else None,
                    "unlisted": config.spec(event.version_id) is None})
    return out


# -- decisions and explain -----------------------------------------------------------------------


def change(event: LifecycleEvent) -> str:
    def state(s, traffic: float) -> str:
        if s is None:
            return "-"
        return f"{s.value} {traffic:g}%" if s.value == "canary" else s.value

    if event.action in IN_PLACE:  # no state change
        return state(event.to_state, event.traffic_percent)
    from_traffic = (event.evidence.get("proposal") or {}).get("from_traffic", 0.0)
    return (f"{state(event.from_state, from_traffic or 0.0)} -> "
            f"{state(event.to_state, event.traffic_percent)}")


def decision_rows(store, task: str, version: str | None = None) -> list[dict]:
    """Every lifecycle event of the task (oldest first) with whether the fold applied it."""
    from infra.readback import lifecycle_event_from_row

    query = q.lifecycle_events(task)
    events = [lifecycle_event_from_row(r) for r in store.query(query.sql, query.params).as_dicts()]
    _, annotated = fold_annotated(task, events)
    out = []
    for event, skipped in annotated:
        if version and event.version_id != version:
            continue
        ev = event.evidence or {}
        out.append({
            "occurred_at": event.occurred_at.isoformat(), "event_id": event.event_id,
            "version_id": event.version_id, "action": event.action.value,
            "from_state": event.from_state.value if event.from_state else None,
            "to_state": event.to_state.value, "traffic_percent": event.traffic_percent,
            "change": change(event), "actor": event.actor,
            "outcome": ev.get("outcome"), "gate_set": ev.get("gate_set"),
            "applied": "yes" if skipped is None else "skipped: " + skipped.text,
            "reason": event.reason, "position": event.position, "evidence": ev,
        })
    return out


def find_event_row(store, task: str, event_id: str) -> dict:
    if len(event_id) < 6:
        raise ReviewbusError("give at least 6 characters of the event id")
    query = q.lifecycle_event(task, event_id)
    rows = store.query(query.sql, query.params).as_dicts()
    if not rows:
        raise ReviewbusError(f"no lifecycle event {event_id!r} in the store")
    if len({r["event_id"] for r in rows}) > 1:
        raise ReviewbusError(f"event id prefix {event_id!r} is ambiguous: "
                             + ", ".join(r["event_id"] for r in rows[:5]))
    return rows[0]


def explain(store, settings: Settings, event_id: str) -> dict[str, Any]:
    """Re-run a decision's stored queries and judge them again (stored and today's config)."""
    from agents.rotation import reevaluate
    from infra.readback import lifecycle_event_from_row

    config = load_config(settings.config)
    event = lifecycle_event_from_row(find_event_row(store, config.task, event_id))
    evidence = event.evidence or {}
    out: dict[str, Any] = {
        "event_id": event.event_id, "version_id": event.version_id,
        "action": event.action.value, "change": change(event), "actor": event.actor,
        "reason": event.reason, "occurred_at": event.occurred_at.isoformat(),
        "position": event.position,
    }
    sql = evidence.get("sql")
    if not isinstance(sql, dict) or not sql:
        out["rerun"] = None
        out["note"] = "not a gate decision (no stored queries): nothing to re-run"
        return out
    rows: dict[str, list[dict]] = {}
    for name, query in sql.items():
        try:
            rows[name] = store.query(query, readonly=True).as_dicts()
        except StoreError as exc:
            raise ReviewbusError(f"re-running the {name} query failed: {exc}") from exc
    try:
        result = reevaluate(evidence, rows, config.rotation)
    except ValueError as exc:  # pydantic's ValidationError included
        raise ReviewbusError(f"cannot judge {event.event_id} again: its stored gate config "
                             f"does not load: {str(exc).splitlines()[0]}") from exc
    out.update({
        "gate_set": evidence.get("gate_set"), "verdict": evidence.get("verdict"),
        "window": evidence.get("window"), "config_hash": evidence.get("config_hash"),
        "stable_version": evidence.get("stable_version"), "rerun": result,
        "then_gates": evidence.get("gates", []),
    })
    return out
