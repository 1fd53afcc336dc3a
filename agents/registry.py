"""The version registry as a fold of lifecycle events (event sourced, never edited in place).

Pure. apply_event either applies one LifecycleEvent (returning a new Registry) or skips it with
a reason; fold replays a whole topic. Invariants kept by the fold:

- at most one stable version per task: promoting one deprecates the other, rolling back the
  stable version restores the previous one, quarantining the stable version restores the
  previous one when there is one (deprecated and warm);
- traffic only on canaries, and the canary shares together never above 100 %;
- no move the state machine forbids; a blocklisted spec is never registered;
- each event id applied at most once (within the last SEEN_EVENT_IDS_MAX);
- an event carrying `position` applies only on the registry it was decided on: a decision
  taken on a stale view (another worker, a person, a repeated tick got there first) is
  skipped, so two workers can never double-promote.

`hold` events record a decision to leave a version where it is; they change nothing and do not
advance the position. `pause`/`resume` set the flag the rotation agent obeys; `block`/`unblock`
edit the blocklist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import ValidationError

from schemas import LifecycleAction, LifecycleEvent, Registry, VersionEntry, VersionSpec
from schemas import VersionState as S
from schemas.base import new_id
from schemas.registry import BlockEntry

from .blocklist import BlockRule, blocked_by, describe, entry_for
from .errors import IllegalTransition, UnknownVersion
from .routing import canary_ranges, stable_version

SEEN_EVENT_IDS_MAX = 1000
DEFAULT_CANARY_STEPS: tuple[float, ...] = (5, 25, 50, 75)

TRANSITIONS: dict[S, set[S]] = {
    S.registered: {S.shadow, S.archived, S.quarantined},
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
# Actions that leave the state as it is (to_state names the current state).
IN_PLACE = {LifecycleAction.hold, LifecycleAction.pause, LifecycleAction.resume,
            LifecycleAction.block, LifecycleAction.unblock, LifecycleAction.update_spec}


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
        (e.previous_state != S.stable, -(e.since.timestamp() if e.since else 0.0),
         -_recency(registry, e), vid)
        for vid, e in registry.versions.items()
        if e.state == S.deprecated and vid != exclude
    )
    return ranked[0][3] if ranked else None


def _moved(entry: VersionEntry, to: S, event: LifecycleEvent, traffic: float = 0.0
           ) -> VersionEntry:
    return entry.model_copy(update={
        "state": to,
        "traffic_percent": traffic if to == S.canary else 0.0,
        "previous_state": entry.state,
        "last_event_id": event.event_id,
        "since": event.occurred_at,
    })


def _skip(registry: Registry, event: LifecycleEvent, why: str) -> tuple[Registry, str]:
    return registry, f"{event.action.value} {event.version_id} ({event.event_id}): {why}"


def apply_event(registry: Registry, event: LifecycleEvent) -> tuple[Registry, str | None]:
    """(new registry, None) when the event applies, (the same registry, reason) when skipped."""
    if event.task != registry.task:
        return _skip(registry, event, f"event for task {event.task!r}, registry is {registry.task!r}")
    if event.event_id in registry.seen_event_ids:
        return _skip(registry, event, "duplicate event id")
    if (event.position is not None and event.action != LifecycleAction.hold
            and event.position != registry.applied):
        return _skip(registry, event, (
            f"stale: decided on registry position {event.position}, which has moved on to "
            f"{registry.applied} since"))

    versions = dict(registry.versions)
    current = versions.get(event.version_id)

    if event.action == LifecycleAction.register:
        return _register(registry, event, versions, current)
    if current is None:
        return _skip(registry, event, "unknown version")
    if event.from_state is not None and event.from_state != current.state:
        return _skip(
            registry, event,
            f"from_state {event.from_state.value} does not match current state "
            f"{current.state.value}",
        )
    if event.action in IN_PLACE:
        return _in_place(registry, event, versions, current)

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
    blocklist = list(registry.blocklist)
    if event.to_state == S.canary:
        if event.traffic_percent <= 0:
            return _skip(registry, event, "a canary needs a traffic share above 0 %")
        others = sum(e.traffic_percent for v, e in versions.items()
                     if v != vid and e.state == S.canary)
        if others + event.traffic_percent > 100.0 + 1e-9:
            return _skip(registry, event, (
                f"canary shares would add up to {others + event.traffic_percent:g} % "
                f"(other canaries hold {others:g} %)"))
    if event.to_state == S.stable:
        # Exactly one stable per task: the old stable steps down to deprecated.
        old = stable_version(registry)
        if old is not None and old != vid:
            versions[old] = _moved(versions[old], S.deprecated, event)
    elif current.state == S.stable and event.to_state in (S.deprecated, S.quarantined):
        # The stable version leaves: the one it replaced comes back (rollback); a quarantine
        # does the same when there is one, and otherwise leaves the task to its fallbacks.
        target = previous_stable(registry, exclude=vid)
        if target is None and event.action == LifecycleAction.rollback:
            return _skip(registry, event, "rollback: no deprecated version to restore")
        if target is not None:
            versions[target] = _moved(versions[target], S.stable, event)
    if event.to_state == S.quarantined:
        if blocked_by(blocklist, current.spec) is None:
            blocklist.append(entry_for(current.spec, entry_id=event.event_id,
                                       reason=f"quarantined: {event.reason}".strip(),
                                       actor=event.actor, added_at=event.occurred_at))
    elif current.state == S.quarantined:
        blocklist = [b for b in blocklist if b.source_version != vid]

    versions[vid] = _moved(current, event.to_state, event, event.traffic_percent)
    return _applied(registry, versions, event, blocklist), None


def _register(registry: Registry, event: LifecycleEvent, versions: dict[str, VersionEntry],
              current: VersionEntry | None) -> tuple[Registry, str | None]:
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
    blocked = blocked_by(registry.blocklist, spec)
    if blocked is not None:
        return _skip(registry, event, f"blocklisted: {describe(blocked)}")
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
        last_event_id=event.event_id, since=event.occurred_at,
    )
    return _applied(registry, versions, event), None


def _in_place(registry: Registry, event: LifecycleEvent, versions: dict[str, VersionEntry],
              current: VersionEntry) -> tuple[Registry, str | None]:
    if event.to_state != current.state:
        return _skip(registry, event, (
            f"{event.action.value} leaves the state as it is: to_state must be "
            f"{current.state.value}, not {event.to_state.value}"))
    vid, action = event.version_id, event.action
    if action == LifecycleAction.hold:
        # A record, not a change: remembered (duplicates drop) but the position stays.
        seen = [*registry.seen_event_ids, event.event_id][-SEEN_EVENT_IDS_MAX:]
        return registry.model_copy(update={"seen_event_ids": seen}), None
    blocklist = list(registry.blocklist)
    if action in (LifecycleAction.pause, LifecycleAction.resume):
        if current.state == S.archived:
            return _skip(registry, event, "archived versions cannot be paused or resumed")
        pause = action == LifecycleAction.pause
        if current.paused == pause:
            return _skip(registry, event, "already paused" if pause else "not paused")
        versions[vid] = current.model_copy(update={"paused": pause,
                                                   "last_event_id": event.event_id})
    elif action == LifecycleAction.block:
        existing = blocked_by(registry.blocklist, current.spec)
        if existing is not None:
            return _skip(registry, event, f"already blocklisted: {describe(existing)}")
        blocklist.append(entry_for(current.spec, entry_id=event.event_id, reason=event.reason,
                                   actor=event.actor, added_at=event.occurred_at))
    elif action == LifecycleAction.update_spec:  # new filters (issue 4)
        spec, why = _spec_update(current.spec, event)
        if spec is None:
            return _skip(registry, event, why)
        versions[vid] = current.model_copy(update={"spec": spec,
                                                   "last_event_id": event.event_id})
    else:  # unblock
        kept = [b for b in blocklist if b.source_version != vid]
        if len(kept) == len(blocklist):
            return _skip(registry, event, "no blocklist entry comes from this version")
        blocklist = kept
    return _applied(registry, versions, event, blocklist), None


def _spec_update(current: VersionSpec, event: LifecycleEvent) -> tuple[VersionSpec | None, str]:
    """The new spec of an update_spec event, or None and why not: same id, task, backend and
    params (a different model is a different version); filters and the rest may change."""
    if event.spec is None:
        return None, "update_spec event without a spec"
    try:
        spec = VersionSpec.model_validate(event.spec)
    except ValidationError as exc:
        return None, f"invalid spec: {exc.errors()[0].get('msg', exc)}"
    for name in ("id", "task", "backend", "params"):
        if getattr(spec, name) != getattr(current, name):
            return None, f"update_spec may not change {name}; register a new version instead"
    return spec, ""


def _applied(
    registry: Registry, versions: dict[str, VersionEntry], event: LifecycleEvent,
    blocklist: list[BlockEntry] | None = None,
) -> Registry:
    seen = [*registry.seen_event_ids, event.event_id][-SEEN_EVENT_IDS_MAX:]
    update = {"versions": versions, "applied": registry.applied + 1, "seen_event_ids": seen}
    if blocklist is not None:
        update["blocklist"] = blocklist
    return registry.model_copy(update=update)


def fold(task: str, events: Iterable[LifecycleEvent]) -> Registry:
    """The registry of one task after applying events in order (skipped events change nothing)."""
    registry = Registry(task=task)
    for event in events:
        registry, _ = apply_event(registry, event)
    return registry


def fold_annotated(task: str, events: Iterable[LifecycleEvent]
                   ) -> tuple[Registry, list[tuple[LifecycleEvent, str | None]]]:
    """Like fold, and for each event whether it applied (None) or why it was skipped."""
    registry = Registry(task=task)
    out: list[tuple[LifecycleEvent, str | None]] = []
    for event in events:
        registry, skipped = apply_event(registry, event)
        out.append((event, skipped))
    return registry, out


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


def register_event(registry: Registry, spec: VersionSpec, actor: str, reason: str,
                   state: S | None = None, traffic: float | None = None) -> LifecycleEvent:
    return LifecycleEvent(
        event_id=register_event_id(registry.task, spec), task=registry.task,
        version_id=spec.id, action=LifecycleAction.register, from_state=None,
        to_state=state or spec.initial_state,
        traffic_percent=spec.initial_traffic_percent if traffic is None else traffic,
        actor=actor, reason=reason, spec=spec.model_dump(mode="json"))


def register_events(
    specs: list[VersionSpec], registry: Registry, actor: str = "config",
    blocklist: Sequence[BlockRule | BlockEntry] = (),
) -> list[LifecycleEvent]:
    """Register events for the specs of registry.task whose id the registry does not know.

    The event id is a hash of task, id and spec, so two workers bootstrapping from the same
    file emit identical events and the fold applies one. Specs of other tasks, repeats of an
    id within `specs`, and specs matching `blocklist` (the versions file's static rules; the
    fold itself refuses those blocked by events) are left out.
    """
    events: list[LifecycleEvent] = []
    emitted: set[str] = set()
    for spec in specs:
        if spec.task != registry.task or spec.id in registry.versions or spec.id in emitted:
            continue
        if blocked_by(blocklist, spec) is not None:
            continue
        emitted.add(spec.id)
        events.append(register_event(registry, spec, actor, "registered from the versions file"))
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


def previous_canary_step(current: float, steps: Sequence[float] = DEFAULT_CANARY_STEPS
                         ) -> float | None:
    """The step below `current`; None when `current` is at (or under) the first step."""
    below = [float(s) for s in steps if float(s) < current]
    return max(below) if below else None


def transition_event_id(
    task: str, version_id: str, from_state: S | str | None, to_state: S | str, applied: int
) -> str:
    """Deterministic id for a decision taken on a registry that has folded `applied` events:
    repeated timer ticks on the same registry produce the same id, and the fold drops the
    duplicates."""
    f = "" if from_state is None else S(from_state).value
    t = S(to_state).value
    return _sha32(f"{task}|{version_id}|{f}|{t}|{applied}")


# -- manual control ---------------------------------------------------------------------

MANUAL_COMMANDS = ("promote", "demote", "rollback", "pause", "resume", "canary", "quarantine",
                   "restore", "archive", "block", "unblock")


def _entry(registry: Registry, version_id: str | None) -> VersionEntry:
    if not version_id:
        raise UnknownVersion("name a version")
    entry = registry.versions.get(version_id)
    if entry is None:
        known = ", ".join(sorted(registry.versions)) or "none"
        raise UnknownVersion(f"unknown version {version_id!r}; known: {known}")
    return entry


def manual_event(registry: Registry, command: str, version_id: str | None, *, actor: str,
                 reason: str, percent: float | None = None,
                 canary_steps: Sequence[float] = DEFAULT_CANARY_STEPS,
                 now: datetime | None = None) -> LifecycleEvent:
    """The LifecycleEvent a person's command means on this registry, checked against it.

    Raises UnknownVersion or IllegalTransition with a one-line reason when the command cannot
    apply. The event carries `position`, so it is skipped should the registry move on before
    it reaches the topic.
    """
    A = LifecycleAction
    if command not in MANUAL_COMMANDS:
        raise IllegalTransition(f"unknown command {command!r}")
    if command == "rollback" and not version_id:
        version_id = stable_version(registry)
        if version_id is None:
            raise IllegalTransition("rollback: the task has no stable version to roll back")
    entry = _entry(registry, version_id)
    assert version_id is not None
    state, traffic = entry.state, 0.0
    if command == "promote":
        action = A.promote
        if entry.state == S.registered:
            to = S.shadow
        elif entry.state == S.shadow:
            to, traffic = S.canary, next_canary_step(None, canary_steps) or 100.0
        elif entry.state == S.canary:
            step = next_canary_step(entry.traffic_percent, canary_steps)
            to, traffic = (S.stable, 0.0) if step is None else (S.canary, step)
        elif entry.state == S.deprecated:
            raise IllegalTransition(
                f"promote {version_id}: a deprecated version comes back with "
                f"`rollback {version_id}`")
        else:
            raise IllegalTransition(f"promote {version_id}: nothing above {state.value}")
    elif command == "demote":
        action = A.demote
        if entry.state == S.canary:
            step = previous_canary_step(entry.traffic_percent, canary_steps)
            to, traffic = (S.shadow, 0.0) if step is None else (S.canary, step)
        elif entry.state == S.stable:
            raise IllegalTransition(
                f"demote {version_id}: that would leave the task without a stable version; "
                "`rollback` restores the previous stable, or promote a canary")
        else:
            raise IllegalTransition(
                f"demote {version_id}: nothing below {state.value} (use archive or quarantine)")
    elif command == "rollback":
        action = A.rollback
        if entry.state == S.stable:
            to = S.deprecated
            if previous_stable(registry, exclude=version_id) is None:
                raise IllegalTransition(
                    f"rollback {version_id}: no deprecated version to restore")
        elif entry.state == S.canary:
            to = S.shadow
        elif entry.state == S.deprecated:
            to = S.stable
        else:
            raise IllegalTransition(
                f"rollback {version_id}: only the stable version, a canary or a deprecated "
                f"version can be rolled back, not a {state.value} one")
    elif command == "canary":
        if percent is None or not 0 < percent <= 100:
            raise IllegalTransition("canary: PERCENT must be above 0 and at most 100")
        action, to, traffic = A.traffic, S.canary, float(percent)
        if entry.state == S.shadow:
            action = A.promote
    elif command in ("pause", "resume", "block", "unblock"):
        action, to = A(command), state
    elif command == "quarantine":
        action, to = A.quarantine, S.quarantined
    elif command == "restore":
        action, to = A.restore, S.shadow
    else:
        action, to = A.archive, S.archived
    extra = {"occurred_at": now} if now is not None else {}
    event = LifecycleEvent(
        event_id=new_id(), task=registry.task, version_id=version_id, action=action,
        from_state=state, to_state=to, traffic_percent=traffic, actor=actor, reason=reason,
        position=registry.applied, **extra)
    check_applies(registry, event, label=command)
    return event


def check_applies(registry: Registry, event: LifecycleEvent, label: str | None = None
                  ) -> Registry:
    """The registry after the event; IllegalTransition with the fold's reason when skipped."""
    new, skipped = apply_event(registry, event)
    if skipped:
        # The fold's reason starts with "<action> <version> (<id>): "; keep what follows.
        raise IllegalTransition(f"{label or event.action.value} {event.version_id}: "
                                f"{skipped.split('): ', 1)[-1]}")
    return new


def register_request(registry: Registry, spec: VersionSpec, *, actor: str, reason: str,
                     static_blocklist: Sequence[BlockRule | BlockEntry] = ()) -> LifecycleEvent:
    """A register event for a spec from a file, checked against the registry and blocklist."""
    if spec.task != registry.task:
        raise IllegalTransition(f"register {spec.id}: spec is for task {spec.task!r}, "
                                f"this registry is {registry.task!r}")
    if spec.id in registry.versions:
        raise IllegalTransition(f"register {spec.id}: already registered (state "
                                f"{registry.versions[spec.id].state.value})")
    blocked = blocked_by(static_blocklist, spec)
    if blocked is not None:
        raise IllegalTransition(f"register {spec.id}: blocklisted: {describe(blocked)}")
    event = register_event(registry, spec, actor, reason)
    event = event.model_copy(update={"position": registry.applied})
    check_applies(registry, event)
    return event
