"""The version registry as a fold of lifecycle events (event sourced, never edited in place).

Pure. apply_event either applies one LifecycleEvent (returning a new Registry) or skips it with
a Skip; fold replays a whole topic. Invariants kept by the fold:

- at most one stable version per task and repository scope (`spec.repos`: the global stable
  version has none; a learner refit promoted for its repository has that one): promoting one
  deprecates the other of the same scope only, rolling back the stable version restores the
  previous one of its scope, quarantining the stable version restores the previous one when
  there is one (deprecated and warm); a scoped stable version with none to restore leaves its
  repositories to the global stable version;
- traffic only on canaries, and the shares of canaries that can see the same repository
  together never above 100 %;
- no move the state machine forbids; a blocklisted spec is never registered;
- an event written before the per-scope rule (`schema_version` 1) folds by the rule it was
  decided on, one stable version per task whatever its scope, so that a topic written before
  folds to the registry its workers had (the same positions: no later decision turns stale);
- each event id applied at most once (within the last SEEN_EVENT_IDS_MAX);
- an event carrying `position` applies only on the registry it was decided on: a decision
  taken on a stale view (another worker, a person, a repeated tick got there first) is
  skipped, so two workers can never double-promote.

`hold` events record a decision to leave a version where it is; they change nothing and do not
advance the position. `pause`/`resume` set the flag the rotation agent obeys; `block`/`unblock`
edit the blocklist. A skipped event comes back as a Skip (a SkipCode and the reason in words).

The events themselves (a person's command, the versions file's register events, the ids and
canary steps of the rotation agent's decisions) are built in agents/lifecycle_commands.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from schemas import BlockEntry, LifecycleAction, LifecycleEvent, Registry, VersionEntry, VersionSpec
from schemas import VersionState as S

from .blocklist import blocked_by, describe, entry_for
from .errors import IllegalTransition
from .fold_skips import Skip, SkipCode, newer_schema_of, newer_schema_text
from .routing import (
    same_scope_stable,
    scopes_overlap,
    stable_of_scope,
    stable_version,
)

SEEN_EVENT_IDS_MAX = 1000
SCOPED_SCHEMA_VERSION = 2  # LifecycleEvent.schema_version from which a stable is per scope

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


def previous_stable(registry: Registry, exclude: str | None = None, *,
                    scope: frozenset[str] | None = None, scoped: bool = True) -> str | None:
    """The deprecated version a rollback restores: one that was stable before it was
    deprecated, the most recently deprecated first; ties by version id. With `exclude` (the
    stable version that leaves), only versions of its scope (`spec.repos`), or of `scope` when
    given; `scoped=False`: of any scope (the rule of events of schema version 1)."""
    if scope is None and scoped and exclude in registry.versions:
        scope = frozenset(registry.versions[exclude].spec.repos)
    ranked = sorted(
        (e.previous_state != S.stable, -(e.since.timestamp() if e.since else 0.0),
         -_recency(registry, e), vid)
        for vid, e in registry.versions.items()
        if e.state == S.deprecated and vid != exclude
        and (scope is None or frozenset(e.spec.repos) == scope)
    )
    return ranked[0][3] if ranked else None


def _legacy(event: LifecycleEvent) -> bool:
    """Written before the per-scope rule: one stable version per task, whatever its scope."""
    return event.schema_version < SCOPED_SCHEMA_VERSION


def restore_target(registry: Registry, leaving: str, *, legacy: bool = False) -> str | None:
    """The deprecated version that becomes stable when the stable version `leaving` is
    deprecated or quarantined: the last stable of its scope. A scoped one with none hands its
    repositories back to the global stable version (nothing to restore), or, when there is
    none (an event of schema version 1 deprecated it), to the one a global rollback restores.
    `legacy`: the rule of schema version 1 events (any scope)."""
    target = previous_stable(registry, exclude=leaving, scoped=not legacy)
    entry = registry.versions.get(leaving)
    if (target is None and not legacy and entry is not None and entry.spec.repos
            and stable_version(registry) is None):
        target = previous_stable(registry, exclude=leaving, scope=frozenset())
    return target


def _moved(entry: VersionEntry, to: S, event: LifecycleEvent, traffic: float = 0.0
           ) -> VersionEntry:
    return entry.model_copy(update={
        "state": to,
        "traffic_percent": traffic if to == S.canary else 0.0,
        "previous_state": entry.state,
        "last_event_id": event.event_id,
        "since": event.occurred_at,
    })


def _skip(registry: Registry, event: LifecycleEvent, code: SkipCode, why: str
          ) -> tuple[Registry, Skip]:
    return registry, Skip(code, why, event.action.value, event.version_id, event.event_id)


def apply_event(registry: Registry, event: LifecycleEvent) -> tuple[Registry, Skip | None]:
    """(new registry, None) when the event applies, (the same registry, Skip) when skipped.

    An event of a schema version this code does not know (written by a newer reviewbus) is
    never folded by the rules of this one: the registry is marked `behind` and folds nothing
    more, so a worker left on the old code during an upgrade keeps the last registry it can
    read rather than one that differs from its peers'."""
    K = SkipCode
    if event.task != registry.task:
        return _skip(registry, event, K.wrong_task,
                     f"event for task {event.task!r}, registry is {registry.task!r}")
    if registry.behind is not None:
        return _skip(registry, event, K.behind, f"not folded: {registry.behind}")
    if event.schema_version not in LifecycleEvent.SUPPORTED_SCHEMA_VERSIONS:
        why = newer_schema_text(event.schema_version, event.event_id)
        return _skip(registry.model_copy(update={"behind": why}), event, K.newer_schema, why)
    if event.event_id in registry.seen_event_ids:
        return _skip(registry, event, K.duplicate, "duplicate event id")
    if (event.position is not None and event.action != LifecycleAction.hold
            and event.position != registry.applied):
        return _skip(registry, event, K.stale, (
            f"stale: decided on registry position {event.position}, which has moved on to "
            f"{registry.applied} since"))

    versions = dict(registry.versions)
    current = versions.get(event.version_id)

    if event.action == LifecycleAction.register:
        return _register(registry, event, versions, current)
    if current is None:
        return _skip(registry, event, K.unknown_version, "unknown version")
    if event.from_state is not None and event.from_state != current.state:
        return _skip(
            registry, event, K.state_mismatch,
            f"from_state {event.from_state.value} does not match current state "
            f"{current.state.value}",
        )
    if event.action in IN_PLACE:
        return _in_place(registry, event, versions, current)

    allowed_targets = ACTION_TARGETS.get(event.action, set())
    if event.to_state not in allowed_targets:
        return _skip(
            registry, event, K.wrong_target,
            f"action {event.action.value} cannot move a version to {event.to_state.value}",
        )
    try:
        check_transition(current.state, event.to_state)
    except IllegalTransition as exc:
        return _skip(registry, event, K.illegal_transition, f"illegal transition: {exc}")

    vid = event.version_id
    blocklist = list(registry.blocklist)
    legacy = _legacy(event)
    if event.to_state == S.canary:
        if event.traffic_percent <= 0:
            return _skip(registry, event, K.canary_share, "a canary needs a traffic share above 0 %")
        mine = set(current.spec.repos)
        others = sum(e.traffic_percent for v, e in versions.items()
                     if v != vid and e.state == S.canary
                     and (legacy or scopes_overlap(mine, set(e.spec.repos))))
        if others + event.traffic_percent > 100.0 + 1e-9:
            return _skip(registry, event, K.canary_share, (
                f"canary shares would add up to {others + event.traffic_percent:g} % "
                f"(other canaries hold {others:g} %)"))
    if event.to_state == S.stable:
        # One stable per task and scope: the old stable of the same scope steps down (a
        # version scoped to a repository leaves the global stable version serving the others).
        old = stable_of_scope(registry, None) if legacy else same_scope_stable(registry, vid)
        if old is not None and old != vid:
            versions[old] = _moved(versions[old], S.deprecated, event)
    elif current.state == S.stable and event.to_state in (S.deprecated, S.quarantined):
        # The stable version leaves: the one it replaced comes back (rollback); a quarantine
        # does the same when there is one, and otherwise leaves the task to its fallbacks.
        target = restore_target(registry, vid, legacy=legacy)
        if target is None and event.action == LifecycleAction.rollback and (
                legacy or not current.spec.repos):
            return _skip(registry, event, K.nothing_to_restore, "rollback: no deprecated version to restore")
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
              current: VersionEntry | None) -> tuple[Registry, Skip | None]:
    K = SkipCode
    if current is not None:
        return _skip(registry, event, K.already_registered,
                     f"already registered (state {current.state.value})")
    if event.spec is None:
        return _skip(registry, event, K.invalid_spec, "register event without a spec")
    try:
        spec = VersionSpec.model_validate(event.spec)
    except ValidationError as exc:
        return _skip(registry, event, K.invalid_spec,
                     f"invalid spec: {exc.errors()[0].get('msg', exc)}")
    if spec.id != event.version_id:
        return _skip(registry, event, K.invalid_spec,
                     f"spec id {spec.id!r} differs from the event's version")
    if spec.task != registry.task:
        return _skip(registry, event, K.invalid_spec, f"spec is for task {spec.task!r}")
    blocked = blocked_by(registry.blocklist, spec)
    if blocked is not None:
        return _skip(registry, event, K.blocklisted, f"blocklisted: {describe(blocked)}")
    if event.to_state == S.stable:
        other = stable_of_scope(registry, None if _legacy(event) else frozenset(spec.repos))
        if other is not None:
            return _skip(
                registry, event, K.second_stable,
                f"task already has stable version {other}; register as shadow and promote",
            )
    versions[event.version_id] = VersionEntry(
        spec=spec, state=event.to_state,
        traffic_percent=event.traffic_percent if event.to_state == S.canary else 0.0,
        last_event_id=event.event_id, since=event.occurred_at,
    )
    return _applied(registry, versions, event), None


def _in_place(registry: Registry, event: LifecycleEvent, versions: dict[str, VersionEntry],
              current: VersionEntry) -> tuple[Registry, Skip | None]:
    K = SkipCode
    if event.to_state != current.state:
        return _skip(registry, event, K.wrong_target, (
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
            return _skip(registry, event, K.illegal_transition,
                         "archived versions cannot be paused or resumed")
        pause = action == LifecycleAction.pause
        if current.paused == pause:
            return _skip(registry, event, K.no_change, "already paused" if pause else "not paused")
        versions[vid] = current.model_copy(update={"paused": pause,
                                                   "last_event_id": event.event_id})
    elif action == LifecycleAction.block:
        existing = blocked_by(registry.blocklist, current.spec)
        if existing is not None:
            return _skip(registry, event, K.blocklisted, f"already blocklisted: {describe(existing)}")
        blocklist.append(entry_for(current.spec, entry_id=event.event_id, reason=event.reason,
                                   actor=event.actor, added_at=event.occurred_at))
    elif action == LifecycleAction.update_spec:  # new filters (issue 4)
        spec, why = _spec_update(current, event)
        if spec is None:
            return _skip(registry, event, K.invalid_spec, why)
        versions[vid] = current.model_copy(update={"spec": spec,
                                                   "last_event_id": event.event_id})
    else:  # unblock
        kept = [b for b in blocklist if b.source_version != vid]
        if len(kept) == len(blocklist):
            return _skip(registry, event, K.no_change, "no blocklist entry comes from this version")
        blocklist = kept
    return _applied(registry, versions, event, blocklist), None


def _spec_update(entry: VersionEntry, event: LifecycleEvent) -> tuple[VersionSpec | None, str]:
    """The new spec of an update_spec event, or None and why not: same id, task, backend and
    params (a different model is a different version); filters and the rest may change, but
    not the repositories of a stable version or a canary (one stable version per scope, the
    canary shares of a repository at most 100 %: both were checked on the scope it has)."""
    current = entry.spec
    if event.spec is None:
        return None, "update_spec event without a spec"
    try:
        spec = VersionSpec.model_validate(event.spec)
    except ValidationError as exc:
        return None, f"invalid spec: {exc.errors()[0].get('msg', exc)}"
    for name in ("id", "task", "backend", "params"):
        if getattr(spec, name) != getattr(current, name):
            return None, f"update_spec may not change {name}; register a new version instead"
    if (entry.state in (S.stable, S.canary) and set(spec.repos) != set(current.repos)
            and not _legacy(event)):
        return None, (f"update_spec may not change the repositories of a {entry.state.value} "
                      "version; register a new version instead")
    return spec, ""


def _applied(
    registry: Registry, versions: dict[str, VersionEntry], event: LifecycleEvent,
    blocklist: list[BlockEntry] | None = None,
) -> Registry:
    seen = [*registry.seen_event_ids, event.event_id][-SEEN_EVENT_IDS_MAX:]
    update: dict[str, Any] = {"versions": versions, "applied": registry.applied + 1, "seen_event_ids": seen}
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
                   ) -> tuple[Registry, list[tuple[LifecycleEvent, Skip | None]]]:
    """Like fold, and for each event whether it applied (None) or why it was skipped."""
    registry = Registry(task=task)
    out: list[tuple[LifecycleEvent, Skip | None]] = []
    for event in events:
        registry, skipped = apply_event(registry, event)
        out.append((event, skipped))
    return registry, out


__all__ = ["IN_PLACE", "SEEN_EVENT_IDS_MAX", "Skip", "SkipCode", "apply_event", "check_transition",
           "fold", "fold_annotated", "newer_schema_of", "newer_schema_text", "previous_stable",
           "restore_target"]
