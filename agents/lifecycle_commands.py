"""Building lifecycle events, each checked against the registry fold (agents/registry.py).

Pure. Three sources of events:

- the versions file: register_events() emits a register event per spec the registry does not
  know yet, with an id hashed from task, id and spec, so two workers bootstrapping from the
  same file emit identical events and the fold applies one;
- the rotation agent's decisions: transition_event_id() (the same decision on the same registry
  gets the same id) and the canary steps next_canary_step()/previous_canary_step();
- a person's command (`reviewbus versions promote|demote|rollback|canary|...`): manual_event()
  interprets the command on the current registry and check_applies() raises IllegalTransition
  with the fold's reason when the event would be skipped; register_request() does the same for
  a spec from a file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime

from schemas import BlockEntry, LifecycleAction, LifecycleEvent, Registry, VersionEntry, VersionSpec
from schemas import VersionState as S
from schemas.base import new_id

from .blocklist import BlockRule, blocked_by, describe
from .errors import IllegalTransition, UnknownVersion
from .registry import Skip, SkipCode, apply_event, previous_stable
from .routing import stable_version

DEFAULT_CANARY_STEPS: tuple[float, ...] = (5, 25, 50, 75)


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


# -- a person's commands -------------------------------------------------------------------

MANUAL_COMMANDS = ("promote", "demote", "rollback", "pause", "resume", "canary", "quarantine",
                   "restore", "archive", "block", "unblock", "abort")


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
    if command not in MANUAL_COMMANDS or command == "abort":
        raise IllegalTransition(f"unknown command {command!r}"
                                + (" (it is several events: manual_events)"
                                   if command == "abort" else ""))
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
            if previous_stable(registry, exclude=version_id) is None and not entry.spec.repos:
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


def manual_events(registry: Registry, command: str, version_id: str | None, *, actor: str,
                  reason: str, percent: float | None = None, full: bool = False,
                  canary_steps: Sequence[float] = DEFAULT_CANARY_STEPS,
                  now: datetime | None = None) -> list[LifecycleEvent]:
    """The events a command means, each checked on the registry the previous ones produce.

    One event for most commands. Two shortcuts, after Argo Rollouts, are several:

    - `promote --full`: every remaining step up to stable, one event each (registered ->
      shadow -> each canary step -> stable), so the history shows the steps it skipped the
      waiting for, and each can be rolled back as usual;
    - `abort`: a canary straight back to shadow (one demote event, whatever its step), then
      paused, so the rotation agent does not promote it again on the same evidence;
      `versions resume` lets it move again (Argo's `retry`).

    Each event carries the registry position it was checked on, so a decision that reached
    the topic between them makes the rest stale (skipped, never half-applied out of order).
    """
    if command == "promote" and full:
        events: list[LifecycleEvent] = []
        current = registry
        entry = _entry(current, version_id)
        if entry.state == S.stable:
            raise IllegalTransition(f"promote --full {version_id}: already stable")
        for _ in range(len(canary_steps) + 3):  # registered, shadow, each step, stable
            step = len(events) + 1
            event = manual_event(current, "promote", version_id, actor=actor,
                                 reason=f"{reason} (promote --full, step {step})",
                                 canary_steps=canary_steps, now=now)
            current = check_applies(current, event)
            events.append(event)
            if current.versions[event.version_id].state == S.stable:
                return events
        raise IllegalTransition(f"promote --full {version_id}: stable not reached")  # pragma: no cover
    if command != "abort":
        return [manual_event(registry, command, version_id, actor=actor, reason=reason,
                             percent=percent, canary_steps=canary_steps, now=now)]
    entry = _entry(registry, version_id)
    assert version_id is not None
    if entry.state != S.canary:
        raise IllegalTransition(f"abort {version_id}: only a canary can be aborted; it is "
                                f"{entry.state.value}")
    extra = {"occurred_at": now} if now is not None else {}
    back = LifecycleEvent(
        event_id=new_id(), task=registry.task, version_id=version_id,
        action=LifecycleAction.demote, from_state=S.canary, to_state=S.shadow,
        traffic_percent=0.0, actor=actor, reason=f"abort: {reason}",
        position=registry.applied, **extra)
    current = check_applies(registry, back, label="abort")
    if entry.paused:
        return [back]
    pause = LifecycleEvent(
        event_id=new_id(), task=registry.task, version_id=version_id,
        action=LifecycleAction.pause, from_state=S.shadow, to_state=S.shadow,
        traffic_percent=0.0, actor=actor, reason=f"abort: {reason}",
        position=current.applied, **extra)
    check_applies(current, pause, label="abort")
    return [back, pause]


def abort_pause_again(after: Registry, events: Sequence[LifecycleEvent],
                      skipped: dict[str, Skip | str | None]) -> LifecycleEvent | None:
    """An abort's pause once more, on the registry `after` its events were folded, when the
    demote applied and the pause alone came too late (another event took its position first):
    pausing the same version again is safe. None when there is nothing to retry."""
    if len(events) != 2 or events[1].action != LifecycleAction.pause:
        return None
    demote, pause = events
    why = skipped.get(pause.event_id)
    if skipped.get(demote.event_id) is not None or not isinstance(why, Skip) or \
            why.code != SkipCode.stale:
        return None
    entry = after.versions.get(pause.version_id)
    if entry is None or entry.state != S.shadow or entry.paused:
        return None
    return pause.model_copy(update={"event_id": new_id(), "position": after.applied})


def check_applies(registry: Registry, event: LifecycleEvent, label: str | None = None
                  ) -> Registry:
    """The registry after the event; IllegalTransition with the fold's reason when skipped."""
    new, skipped = apply_event(registry, event)
    if skipped:
        raise IllegalTransition(f"{label or event.action.value} {event.version_id}: "
                                f"{skipped.text}")
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
