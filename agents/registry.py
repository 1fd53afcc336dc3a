"""The version registry as a fold of lifecycle events (event sourced, never edited in place).

Pure. apply_event either applies one LifecycleEvent (returning a new Registry) or skips it with
a reason; fold replays a whole topic. Invariants kept by the fold: at most one stable version
per task (promoting one deprecates the other), traffic only on canaries, no move the state
machine forbids, and each event id applied at most once (within the last SEEN_EVENT_IDS_MAX).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

from pydantic import ValidationError

from schemas import LifecycleAction, LifecycleEvent, Registry, VersionEntry, VersionSpec
from schemas import VersionState as S

from .errors import IllegalTransition
from .routing import canary_ranges, stable_version

SEEN_EVENT_IDS_MAX = 1000
DEFAULT_CANARY_STEPS: tuple[float, ...] = (5, 25, 50, 75)

TRANSITIONS: dict[S, set[S]] = {
    S.registered: {S.shadow, S.quarantined},
    S.shadow: {S.canary, S.archived, S.quarantined},
    S.canary: {S.canary, S.stable, S.shadow, S.quarantined},
    S.stable: {S.deprecated, S.quarantined},
    S.deprecated: {S.stable, S.archived, S.quarantined},
    S.quarantined: {S.shadow, S.archived},
    S.archived: set(),
}

# Which target states each action may name; register may set any initial state.
ACTION_TARGETS: dict[LifecycleAction, set[S]] = {
    LifecycleAction.promote: {S.shadow, S.canary, S.stable},
    LifecycleAction.traffic: {S.canary},
    LifecycleAction.demote: {S.canary, S.shadow, S.deprecated, S.archived},
    LifecycleAction.rollback: {S.shadow, S.deprecated, S.stable},
    LifecycleAction.quarantine: {S.quarantined},
    LifecycleAction.restore: {S.shadow},
    LifecycleAction.archive: {S.archived},
}


def check_transition(from_state: S, to_state: S) -> None:
    """Raise IllegalTransition unless the state machine allows from_state -> to_state."""
    allowed = TRANSITIONS.get(S(from_state), set())
    if S(to_state) in allowed:
        return
    if not allowed:
        raise IllegalTransition(
            f"{S(from_state).value} -> {S(to_state).value}: {S(from_state).value} is terminal"
        )
    options = ", ".join(sorted(s.value for s in allowed))
    raise IllegalTransition(
        f"{S(from_state).value} -> {S(to_state).value} is not allowed; "
        f"from {S(from_state).value} a version may move to: {options}"
    )


def _recency(registry: Registry, entry: VersionEntry) -> int:
    """Position of the entry's last event among the remembered ids (-1 when forgotten)."""
    if entry.last_event_id is None:
        return -1
    try:
        return registry.seen_event_ids.index(entry.last_event_id)
    except ValueError:
        return -1


def previous_stable(registry: Registry, exclude: str | None = None) -> str | None:
    """The deprecated version a rollback restores: one that was stable before it was
    deprecated, the most recently deprecated first; ties by version id."""
    ranked = sorted(
        (e.previous_state != S.stable, -_recency(registry, e), vid)
        for vid, e in registry.versions.items()
        if e.state == S.deprecated and vid != exclude
    )
    return ranked[0][2] if ranked else None


def _moved(entry: VersionEntry, to: S, event_id: str, traffic: float = 0.0) -> VersionEntry:
    return entry.model_copy(update={
        "state": to,
        "traffic_percent": traffic if to == S.canary else 0.0,
        "previous_state": entry.state,
        "last_event_id": event_id,
    })


def _skip(registry: Registry, event: LifecycleEvent, why: str) -> tuple[Registry, str]:
    return registry, f"{event.action.value} {event.version_id} ({event.event_id}): {why}"


def apply_event(registry: Registry, event: LifecycleEvent) -> tuple[Registry, str | None]:
    """(new registry, None) when the event applies, (the same registry, reason) when skipped."""
    if event.task != registry.task:
        return _skip(registry, event, f"event for task {event.task!r}, registry is {registry.task!r}")
    if event.event_id in registry.seen_event_ids:
        return _skip(registry, event, "duplicate event id")

    versions = dict(registry.versions)
    current = versions.get(event.version_id)

    if event.action == LifecycleAction.register:
        if current is not None:
            return _skip(registry, event, f"already registered (state {current.state.value})")
        if event.spec is None:
            return _skip(registry, event, "register event without a spec")
        try:
            spec = VersionSpec.model_validate(event.spec)
        except ValidationError as exc:
            return _skip(registry, event, f"invalid spec: {exc.errors()[0].get('msg', exc)}")
        if spec.id != event.version_id:
            return _skip(registry, event, f"spec id {spec.id!r} differs from the event's version")
        if spec.task != registry.task:
            return _skip(registry, event, f"spec is for task {spec.task!r}")
        if event.to_state == S.stable:
            other = stable_version(registry)
            if other is not None:
                return _skip(
                    registry, event,
                    f"task already has stable version {other}; register as shadow and promote",
                )
        versions[event.version_id] = VersionEntry(
            spec=spec, state=event.to_state,
            traffic_percent=event.traffic_percent if event.to_state == S.canary else 0.0,
            last_event_id=event.event_id,
        )
        return _applied(registry, versions, event), None

    if current is None:
        return _skip(registry, event, "unknown version")
    if event.from_state is not None and event.from_state != current.state:
        return _skip(
            registry, event,
            f"from_state {event.from_state.value} does not match current state "
            f"{current.state.value}",
        )
    allowed_targets = ACTION_TARGETS.get(event.action, set())
    if event.to_state not in allowed_targets:
        return _skip(
            registry, event,
            f"action {event.action.value} cannot move a version to {event.to_state.value}",
        )
    try:
        check_transition(current.state, event.to_state)
    except IllegalTransition as exc:
        return _skip(registry, event, f"illegal transition: {exc}")

    vid = event.version_id
    if event.to_state == S.stable:
        # Exactly one stable per task: the old stable steps down to deprecated.
        old = stable_version(registry)
        if old is not None and old != vid:
            versions[old] = _moved(versions[old], S.deprecated, event.event_id)
    elif (
        event.action == LifecycleAction.rollback
        and current.state == S.stable
        and event.to_state == S.deprecated
    ):
        # Rolling back the stable version restores the one it replaced.
        target = previous_stable(registry, exclude=vid)
        if target is None:
            return _skip(registry, event, "rollback: no deprecated version to restore")
        versions[target] = _moved(versions[target], S.stable, event.event_id)

    versions[vid] = _moved(current, event.to_state, event.event_id, event.traffic_percent)
    return _applied(registry, versions, event), None


def _applied(
    registry: Registry, versions: dict[str, VersionEntry], event: LifecycleEvent
) -> Registry:
    seen = [*registry.seen_event_ids, event.event_id][-SEEN_EVENT_IDS_MAX:]
    return registry.model_copy(
        update={"versions": versions, "applied": registry.applied + 1, "seen_event_ids": seen}
    )


def fold(task: str, events: Iterable[LifecycleEvent]) -> Registry:
    """The registry of one task after applying events in order (skipped events change nothing)."""
    registry = Registry(task=task)
    for event in events:
        registry, _ = apply_event(registry, event)
    return registry


def traffic_table(registry: Registry) -> dict[str, float]:
    """Share of primary traffic per version, in percent: canaries their (clamped) share, the
    stable version 100 minus the canary shares, every other version 0."""
    table = {vid: 0.0 for vid in sorted(registry.versions)}
    used = 0.0
    for vid, start, end in canary_ranges(registry):
        table[vid] = end - start
        used += end - start
    stable = stable_version(registry)
    if stable is not None:
        table[stable] = max(0.0, 100.0 - used)
    return table


def _sha32(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def register_event_id(task: str, spec: VersionSpec) -> str:
    spec_json = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return _sha32(f"{task}|{spec.id}|register|{spec_json}")


def register_events(
    specs: list[VersionSpec], registry: Registry, actor: str = "config"
) -> list[LifecycleEvent]:
    """Register events for the specs of registry.task whose id the registry does not know.

    The event id is a hash of task, id and spec, so two workers bootstrapping from the same
    file emit identical events and the fold applies one. Specs of other tasks, and repeats of
    an id within `specs`, are left out.
    """
    events: list[LifecycleEvent] = []
    emitted: set[str] = set()
    for spec in specs:
        if spec.task != registry.task or spec.id in registry.versions or spec.id in emitted:
            continue
        emitted.add(spec.id)
        events.append(LifecycleEvent(
            event_id=register_event_id(registry.task, spec),
            task=registry.task,
            version_id=spec.id,
            action=LifecycleAction.register,
            from_state=None,
            to_state=spec.initial_state,
            traffic_percent=spec.initial_traffic_percent,
            actor=actor,
            reason="registered from the versions file",
            spec=spec.model_dump(mode="json"),
        ))
    return events


def next_canary_step(
    current: float | None, steps: Sequence[float] = DEFAULT_CANARY_STEPS
) -> float | None:
    """The next canary traffic share after `current` (None: not yet a canary -> the first
    step); None when no step is left, meaning the next move is to stable."""
    ordered = sorted(float(s) for s in steps)
    if current is None:
        return ordered[0] if ordered else None
    return next((s for s in ordered if s > current), None)


def transition_event_id(
    task: str, version_id: str, from_state: S | str | None, to_state: S | str, applied: int
) -> str:
    """Deterministic id for a decision taken on a registry that has folded `applied` events:
    repeated timer ticks on the same registry produce the same id, and the fold drops the
    duplicates."""
    f = "" if from_state is None else S(from_state).value
    t = S(to_state).value
    return _sha32(f"{task}|{version_id}|{f}|{t}|{applied}")
