import pytest

from agents.errors import IllegalTransition
from agents.lifecycle_commands import next_canary_step, register_events, transition_event_id
from agents.registry import (
    SEEN_EVENT_IDS_MAX,
    TRANSITIONS,
    Skip,
    SkipCode,
    apply_event,
    check_transition,
    fold,
)
from agents.routing import traffic_table
from schemas import LifecycleAction, LifecycleEvent, Registry, VersionSpec, VersionState

S = VersionState
A = LifecycleAction
TASK = "code-review"


def spec(vid, state=S.shadow, traffic=0.0, **kw):
    return VersionSpec(id=vid, backend="fake", initial_state=state,
                       initial_traffic_percent=traffic, **kw)


def ev(vid, action, to, frm=None, traffic=0.0, eid=None, **kw):
    extra = {"event_id": eid} if eid else {}
    return LifecycleEvent(task=TASK, version_id=vid, action=action, from_state=frm,
                          to_state=to, traffic_percent=traffic, actor="test", **extra, **kw)


def boot(*specs):
    r = Registry(task=TASK)
    return fold(TASK, register_events(list(specs), r))


def applied(r, event):
    new, why = apply_event(r, event)
    assert why is None, why
    assert new is not r
    return new


def skipped(r, event, fragment):
    new, why = apply_event(r, event)
    assert new is r
    assert isinstance(why, Skip) and fragment in why.text, why
    assert str(why) == f"{event.action.value} {event.version_id} ({event.event_id}): {why.text}"
    return why.text


def states(r):
    return {v: (e.state.value, e.traffic_percent) for v, e in sorted(r.versions.items())}


# -- the state machine ------------------------------------------------------------------

LEGAL = [
    (S.registered, S.shadow), (S.shadow, S.canary), (S.canary, S.canary),
    (S.canary, S.stable), (S.canary, S.shadow), (S.stable, S.deprecated),
    (S.deprecated, S.stable), (S.deprecated, S.archived), (S.quarantined, S.shadow),
    (S.shadow, S.archived), (S.quarantined, S.archived),
] + [(s, S.quarantined) for s in S if s not in (S.archived, S.quarantined)]

ILLEGAL = [
    (S.registered, S.stable), (S.shadow, S.stable), (S.stable, S.canary),
    (S.archived, S.shadow), (S.archived, S.quarantined), (S.quarantined, S.stable),
    (S.deprecated, S.canary), (S.stable, S.shadow), (S.registered, S.canary),
]


@pytest.mark.parametrize("frm,to", LEGAL)
def test_legal_transitions(frm, to):
    check_transition(frm, to)
    assert to in TRANSITIONS[frm]


@pytest.mark.parametrize("frm,to", ILLEGAL)
def test_illegal_transitions(frm, to):
    with pytest.raises(IllegalTransition) as info:
        check_transition(frm, to)
    assert frm.value in str(info.value) and to.value in str(info.value)


def test_archived_is_terminal():
    assert TRANSITIONS[S.archived] == set()
    with pytest.raises(IllegalTransition, match="terminal"):
        check_transition(S.archived, S.shadow)


# -- registration -----------------------------------------------------------------------

def test_register_events_are_deterministic_and_idempotent():
    specs = [spec("v1", S.stable), spec("v2")]
    r = Registry(task=TASK)
    a, b = register_events(specs, r), register_events(specs, r)
    assert [e.event_id for e in a] == [e.event_id for e in b]
    assert len(a[0].event_id) == 32 and a[0].event_id != a[1].event_id
    assert a[0].to_state == S.stable and a[0].actor == "config"
    # two workers bootstrapping: both sets of events reach the topic, one of each applies
    r2 = fold(TASK, a + b)
    assert states(r2) == {"v1": ("stable", 0.0), "v2": ("shadow", 0.0)}
    assert r2.applied == 2
    # nothing to register once known
    assert register_events(specs, r2) == []


def test_register_event_id_changes_with_the_spec():
    r = Registry(task=TASK)
    e1 = register_events([spec("v1", params={"x": 1})], r)[0]
    e2 = register_events([spec("v1", params={"x": 2})], r)[0]
    assert e1.event_id != e2.event_id


def test_register_events_skip_other_tasks_and_repeats():
    r = Registry(task=TASK)
    evs = register_events([spec("v1"), spec("v1"), spec("o", task="other")], r)
    assert [e.version_id for e in evs] == ["v1"]


def test_register_initial_canary_traffic():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 10.0))
    assert states(r) == {"v1": ("stable", 0.0), "v2": ("canary", 10.0)}
    assert traffic_table(r) == {"v1": 90.0, "v2": 10.0}


def test_register_of_existing_version_is_skipped():
    r = boot(spec("v1", S.stable))
    e = ev("v1", A.register, S.shadow, spec=spec("v1").model_dump(mode="json"))
    skipped(r, e, "already registered")


def test_register_second_stable_is_skipped():
    r = boot(spec("v1", S.stable))
    e = ev("v2", A.register, S.stable, spec=spec("v2").model_dump(mode="json"))
    skipped(r, e, "already has stable version v1")


def test_register_without_or_with_bad_spec_is_skipped():
    r = Registry(task=TASK)
    skipped(r, ev("v1", A.register, S.shadow), "without a spec")
    skipped(r, ev("v1", A.register, S.shadow, spec={"id": "v1"}), "invalid spec")
    skipped(r, ev("v1", A.register, S.shadow, spec=spec("v9").model_dump()), "differs")


# -- skips ------------------------------------------------------------------------------

def test_duplicate_event_is_skipped():
    r = boot(spec("v1", S.stable), spec("v2"))
    e = ev("v2", A.promote, S.canary, S.shadow, 5.0, eid="e1")
    r = applied(r, e)
    skipped(r, e, "duplicate")
    # even when the content differs: the id is what counts
    skipped(r, ev("v2", A.promote, S.canary, S.canary, 25.0, eid="e1"), "duplicate")


def test_seen_ids_are_bounded_to_the_last_1000():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 5.0))
    for i in range(SEEN_EVENT_IDS_MAX + 5):
        r = applied(r, ev("v2", A.traffic, S.canary, traffic=float(i % 90 + 1), eid=f"t{i}"))
    assert len(r.seen_event_ids) == SEEN_EVENT_IDS_MAX
    assert r.seen_event_ids[-1] == f"t{SEEN_EVENT_IDS_MAX + 4}"
    assert "t0" not in r.seen_event_ids


def test_unknown_version_is_skipped():
    skipped(boot(spec("v1", S.stable)), ev("nope", A.promote, S.canary), "unknown version")


def test_from_state_mismatch_is_skipped():
    r = boot(spec("v1", S.stable), spec("v2"))
    skipped(r, ev("v2", A.promote, S.stable, S.canary), "does not match")


def test_illegal_transition_is_skipped():
    r = boot(spec("v1", S.stable), spec("v2"))
    skipped(r, ev("v2", A.promote, S.stable, S.shadow), "illegal transition")


def test_action_must_fit_the_target():
    r = boot(spec("v1", S.stable), spec("v2"))
    skipped(r, ev("v2", A.quarantine, S.canary), "cannot move")


def test_event_for_other_task_is_skipped():
    r = boot(spec("v1", S.stable))
    e = LifecycleEvent(task="other", version_id="v1", action=A.quarantine,
                       to_state=S.quarantined, actor="t")
    skipped(r, e, "task")


def test_registry_is_not_mutated():
    r = boot(spec("v1", S.stable), spec("v2"))
    before = r.model_dump()
    applied(r, ev("v2", A.promote, S.canary, S.shadow, 5.0))
    assert r.model_dump() == before


# -- promotion, rollback, quarantine ----------------------------------------------------

def test_full_promotion_path_and_traffic():
    r = boot(spec("v1", S.stable), spec("v2"))
    r = applied(r, ev("v2", A.promote, S.canary, S.shadow, 5.0))
    assert traffic_table(r) == {"v1": 95.0, "v2": 5.0}
    for t in (25.0, 50.0, 75.0):
        r = applied(r, ev("v2", A.traffic, S.canary, S.canary, t))
        assert traffic_table(r) == {"v1": 100.0 - t, "v2": t}
    r = applied(r, ev("v2", A.promote, S.stable, S.canary))
    assert states(r) == {"v1": ("deprecated", 0.0), "v2": ("stable", 0.0)}
    assert traffic_table(r) == {"v1": 0.0, "v2": 100.0}
    assert r.versions["v1"].previous_state == S.stable
    assert sum(e.state == S.stable for e in r.versions.values()) == 1
    assert r.applied == 2 + 5


def test_rollback_of_stable_restores_previous_stable():
    r = boot(spec("v1", S.stable), spec("v0", S.deprecated), spec("v2", S.canary, 5.0))
    r = applied(r, ev("v2", A.promote, S.stable, S.canary))
    assert states(r)["v1"] == ("deprecated", 0.0)
    r = applied(r, ev("v2", A.rollback, S.deprecated, S.stable))
    # v1 (stable before v2) comes back, not the older v0
    assert states(r) == {"v0": ("deprecated", 0.0), "v1": ("stable", 0.0),
                         "v2": ("deprecated", 0.0)}
    # and rolling back again toggles to v2, the most recently deprecated stable
    r = applied(r, ev("v1", A.rollback, S.deprecated, S.stable))
    assert states(r)["v2"] == ("stable", 0.0) and states(r)["v1"] == ("deprecated", 0.0)


def test_rollback_of_stable_without_deprecated_is_skipped():
    r = boot(spec("v1", S.stable))
    skipped(r, ev("v1", A.rollback, S.deprecated, S.stable), "no deprecated version")


def test_rollback_by_naming_the_deprecated_version():
    r = boot(spec("v1", S.stable), spec("v0", S.deprecated))
    r = applied(r, ev("v0", A.rollback, S.stable, S.deprecated))
    assert states(r) == {"v0": ("stable", 0.0), "v1": ("deprecated", 0.0)}


def test_canary_rollback_goes_back_to_shadow_with_no_traffic():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 50.0))
    r = applied(r, ev("v2", A.rollback, S.shadow, S.canary))
    assert states(r)["v2"] == ("shadow", 0.0)
    assert traffic_table(r)["v1"] == 100.0


def test_quarantine_and_restore():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 25.0))
    r = applied(r, ev("v2", A.quarantine, S.quarantined, S.canary))
    assert states(r)["v2"] == ("quarantined", 0.0)
    assert r.versions["v2"].previous_state == S.canary
    skipped(r, ev("v2", A.quarantine, S.quarantined), "illegal")
    r = applied(r, ev("v2", A.restore, S.shadow, S.quarantined))
    assert states(r)["v2"] == ("shadow", 0.0)
    r = applied(r, ev("v2", A.archive, S.archived))
    skipped(r, ev("v2", A.restore, S.shadow), "illegal")


def test_fold_is_replayable():
    events = register_events([spec("v1", S.stable), spec("v2")], Registry(task=TASK))
    events += [ev("v2", A.promote, S.canary, S.shadow, 5.0, eid="p1"),
               ev("v2", A.promote, S.canary, S.shadow, 5.0, eid="p1"),  # redelivered
               ev("v2", A.promote, S.stable, S.shadow, eid="p2"),  # stale: skipped
               ev("v2", A.promote, S.stable, S.canary, eid="p3")]
    r1, r2 = fold(TASK, events), fold(TASK, events)
    assert r1 == r2
    assert states(r1) == {"v1": ("deprecated", 0.0), "v2": ("stable", 0.0)}
    assert r1.applied == 4


# -- helpers for the rotation agent -----------------------------------------------------

def test_next_canary_step():
    assert next_canary_step(None) == 5
    assert next_canary_step(5) == 25
    assert next_canary_step(25) == 50
    assert next_canary_step(50) == 75
    assert next_canary_step(75) is None
    assert next_canary_step(30) == 50
    assert next_canary_step(10, steps=(10, 100)) == 100
    assert next_canary_step(None, steps=()) is None


def test_transition_event_id_is_deterministic():
    a = transition_event_id(TASK, "v2", S.shadow, S.canary, 7)
    assert a == transition_event_id(TASK, "v2", "shadow", "canary", 7)
    assert len(a) == 32
    assert a != transition_event_id(TASK, "v2", S.shadow, S.canary, 8)
    assert a != transition_event_id(TASK, "v3", S.shadow, S.canary, 7)
    assert a != transition_event_id(TASK, "v2", S.canary, S.stable, 7)


def test_repeated_timer_ticks_apply_once():
    r = boot(spec("v1", S.stable), spec("v2"))
    eid = transition_event_id(TASK, "v2", S.shadow, S.canary, r.applied)
    tick1 = ev("v2", A.promote, S.canary, S.shadow, 5.0, eid=eid)
    tick2 = ev("v2", A.promote, S.canary, S.shadow, 5.0, eid=eid)
    r = fold(TASK, register_events([spec("v1", S.stable), spec("v2")], Registry(task=TASK))
             + [tick1, tick2])
    assert r.applied == 3
    assert states(r)["v2"] == ("canary", 5.0)


def test_rollback_restores_the_most_recently_replaced_stable():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 5.0), spec("v3", S.canary, 5.0))
    r = applied(r, ev("v2", A.promote, S.stable, S.canary))  # v1 -> deprecated
    r = applied(r, ev("v3", A.promote, S.stable, S.canary))  # v2 -> deprecated
    assert {v for v, e in r.versions.items() if e.state == S.deprecated} == {"v1", "v2"}
    r = applied(r, ev("v3", A.rollback, S.deprecated, S.stable))
    assert states(r) == {"v1": ("deprecated", 0.0), "v2": ("stable", 0.0),
                         "v3": ("deprecated", 0.0)}


# -- issue 3: positions, holds, pause, blocklist, manual commands ----------------------------

from datetime import UTC, datetime, timedelta  # noqa: E402

from agents.blocklist import BlockRule  # noqa: E402
from agents.errors import UnknownVersion  # noqa: E402
from agents.lifecycle_commands import (  # noqa: E402
    abort_pause_again,
    check_applies,
    manual_event,
    manual_events,
    previous_canary_step,
    register_request,
)
from agents.registry import fold_annotated  # noqa: E402

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(minutes):
    return T0 + timedelta(minutes=minutes)


def test_a_decision_on_a_stale_registry_is_skipped():
    r = boot(spec("v1", S.stable), spec("v2"), spec("v3"))
    p = r.applied
    first = ev("v2", A.promote, S.canary, S.shadow, 5.0, eid="a", position=p)
    # Decided on the same registry by a second worker: different move, same position.
    second = ev("v3", A.promote, S.canary, S.shadow, 5.0, eid="b", position=p)
    r = applied(r, first)
    skipped(r, second, "stale: decided on registry position")
    # the same decision taken on the new registry applies
    applied(r, ev("v3", A.promote, S.canary, S.shadow, 5.0, eid="c", position=r.applied))


def test_two_ticks_deciding_different_moves_on_one_position_move_once():
    """The double-promotion a position prevents: canary 5 -> 25 and canary 5 -> stable,
    both decided at the same position (e.g. a tick before the fold and one after a restart)."""
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 5.0))
    p = r.applied
    step = ev("v2", A.promote, S.canary, S.canary, 25.0, eid=transition_event_id(
        TASK, "v2", S.canary, S.canary, p), position=p)
    jump = ev("v2", A.promote, S.stable, S.canary, eid=transition_event_id(
        TASK, "v2", S.canary, S.stable, p), position=p)
    final, notes = fold_annotated(TASK, [*register_events(
        [spec("v1", S.stable), spec("v2", S.canary, 5.0)], Registry(task=TASK)), step, jump,
        step])
    assert states(final) == {"v1": ("stable", 0.0), "v2": ("canary", 25.0)}
    assert [n for _, n in notes[2:]] == [None, notes[3][1], notes[4][1]]
    assert notes[3][1].code == SkipCode.stale and notes[4][1].code == SkipCode.duplicate


def test_holds_are_recorded_but_change_nothing():
    r = boot(spec("v1", S.stable), spec("v2"))
    hold = ev("v2", A.hold, S.shadow, S.shadow, eid="h1", position=r.applied,
              evidence={"outcome": "inconclusive"})
    r2 = applied(r, hold)
    assert r2.versions == r.versions and r2.applied == r.applied
    assert "h1" in r2.seen_event_ids
    skipped(r2, hold, "duplicate")
    # a hold never goes stale (it is a record), and cannot claim another state
    applied(r2, ev("v2", A.hold, S.shadow, eid="h2", position=0))
    skipped(r2, ev("v2", A.hold, S.canary, eid="h3"), "leaves the state as it is")


def test_pause_and_resume():
    r = boot(spec("v1", S.stable), spec("v2"))
    r = applied(r, ev("v2", A.pause, S.shadow, eid="p1"))
    assert r.versions["v2"].paused and r.versions["v2"].state == S.shadow
    skipped(r, ev("v2", A.pause, S.shadow), "already paused")
    # a person may still move a paused version; it stays paused
    r = applied(r, ev("v2", A.promote, S.canary, S.shadow, 5.0))
    assert r.versions["v2"].paused
    r = applied(r, ev("v2", A.resume, S.canary, traffic=5.0))
    assert not r.versions["v2"].paused
    skipped(r, ev("v2", A.resume, S.canary), "not paused")


def test_since_is_the_time_of_the_last_move():
    r = fold(TASK, [
        ev("v1", A.register, S.stable, spec=spec("v1", S.stable).model_dump(mode="json"),
           occurred_at=at(0)),
        ev("v2", A.register, S.shadow, spec=spec("v2").model_dump(mode="json"),
           occurred_at=at(1)),
        ev("v2", A.promote, S.canary, S.shadow, 5.0, occurred_at=at(10)),
        ev("v2", A.pause, S.canary, occurred_at=at(11)),
        ev("v2", A.traffic, S.canary, S.canary, 25.0, occurred_at=at(20)),
        ev("v2", A.promote, S.stable, S.canary, occurred_at=at(30)),
    ])
    assert r.versions["v2"].since == at(30)
    assert r.versions["v1"].since == at(30)  # deprecated by the same event


def test_canary_shares_never_exceed_100():
    r = boot(spec("v1", S.stable), spec("a", S.canary, 60.0), spec("b"))
    skipped(r, ev("b", A.promote, S.canary, S.shadow, 50.0), "would add up to 110")
    skipped(r, ev("b", A.promote, S.canary, S.shadow, 0.0), "above 0")
    applied(r, ev("b", A.promote, S.canary, S.shadow, 40.0))


def test_quarantining_the_stable_version_restores_the_previous_one():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 5.0))
    r = applied(r, ev("v2", A.promote, S.stable, S.canary))
    r = applied(r, ev("v2", A.quarantine, S.quarantined, S.stable, reason="5 failures"))
    assert states(r) == {"v1": ("stable", 0.0), "v2": ("quarantined", 0.0)}
    # without a previous stable the task is left to its fallbacks
    r = boot(spec("v1", S.stable), spec("v2"))
    r = applied(r, ev("v1", A.quarantine, S.quarantined, S.stable))
    assert states(r) == {"v1": ("quarantined", 0.0), "v2": ("shadow", 0.0)}


def test_quarantine_blocklists_the_combination_until_restored():
    r = boot(spec("v1", S.stable), spec("v2", params={"model": "m1", "t": 0.2}))
    r = applied(r, ev("v2", A.quarantine, S.quarantined, eid="q1", reason="timeouts"))
    assert [(b.id, b.backend, b.params, b.source_version) for b in r.blocklist] == [
        ("q1", "fake", {"model": "m1", "t": 0.2}, "v2")]
    same_tech = spec("v9", params={"model": "m1", "t": 0.2})
    why = skipped(r, ev("v9", A.register, S.shadow, spec=same_tech.model_dump(mode="json")),
                  "blocklisted")
    assert "timeouts" in why and "from version v2" in why
    # other parameters are another technique
    applied(r, ev("v8", A.register, S.shadow,
                  spec=spec("v8", params={"model": "m2"}).model_dump(mode="json")))
    r = applied(r, ev("v2", A.restore, S.shadow, S.quarantined))
    assert r.blocklist == []
    applied(r, ev("v9", A.register, S.shadow, spec=same_tech.model_dump(mode="json")))


def test_block_and_unblock_by_hand():
    r = boot(spec("v1", S.stable), spec("v2", params={"model": "m1"}))
    r = applied(r, ev("v2", A.block, S.shadow, reason="leaks secrets"))
    skipped(r, ev("v2", A.block, S.shadow), "already blocklisted")
    e = ev("v3", A.register, S.shadow,
           spec=spec("v3", params={"model": "m1", "extra": 1}).model_dump(mode="json"))
    assert "leaks secrets" in skipped(r, e, "blocklisted")
    r = applied(r, ev("v2", A.unblock, S.shadow))
    applied(r, e)
    skipped(r, ev("v2", A.unblock, S.shadow), "no blocklist entry")


def test_previous_canary_step():
    assert previous_canary_step(25) == 5
    assert previous_canary_step(5) is None
    assert previous_canary_step(30) == 25


# manual commands: the event a person's command means, or a one-line refusal

def manual(r, command, version=None, **kw):
    return manual_event(r, command, version, actor="user:ann", reason="because", **kw)


def test_manual_promote_walks_the_lifecycle():
    r = boot(spec("v1", S.stable), spec("v2", S.registered))
    path = []
    for _ in range(6):
        e = manual(r, "promote", "v2")
        assert e.actor == "user:ann" and e.reason == "because" and e.position == r.applied
        r = check_applies(r, e)
        path.append(states(r)["v2"])
    assert path == [("shadow", 0.0), ("canary", 5.0), ("canary", 25.0), ("canary", 50.0),
                    ("canary", 75.0), ("stable", 0.0)]
    assert states(r)["v1"] == ("deprecated", 0.0)
    with pytest.raises(IllegalTransition, match="nothing above stable"):
        manual(r, "promote", "v2")
    with pytest.raises(IllegalTransition, match="rollback v1"):
        manual(r, "promote", "v1")


def test_manual_demote_and_canary_percent():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 25.0))
    r = check_applies(r, manual(r, "demote", "v2"))
    assert states(r)["v2"] == ("canary", 5.0)
    r = check_applies(r, manual(r, "demote", "v2"))
    assert states(r)["v2"] == ("shadow", 0.0)
    with pytest.raises(IllegalTransition, match="nothing below shadow"):
        manual(r, "demote", "v2")
    with pytest.raises(IllegalTransition, match="without a stable version"):
        manual(r, "demote", "v1")
    r = check_applies(r, manual(r, "canary", "v2", percent=12.5))
    assert states(r)["v2"] == ("canary", 12.5)
    with pytest.raises(IllegalTransition, match="PERCENT"):
        manual(r, "canary", "v2", percent=0)
    with pytest.raises(IllegalTransition, match="canary v1"):
        manual(r, "canary", "v1", percent=10)  # the stable version cannot be a canary


def test_manual_rollback():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 5.0))
    with pytest.raises(IllegalTransition, match="no deprecated version"):
        manual(r, "rollback")
    r = check_applies(r, manual(r, "promote", "v2", canary_steps=(5,)))
    assert states(r)["v2"] == ("stable", 0.0)
    e = manual(r, "rollback")  # no version: the stable one
    assert e.version_id == "v2"
    r = check_applies(r, e)
    assert states(r) == {"v1": ("stable", 0.0), "v2": ("deprecated", 0.0)}
    r = check_applies(r, manual(r, "rollback", "v2"))  # a deprecated version back to stable
    assert states(r) == {"v1": ("deprecated", 0.0), "v2": ("stable", 0.0)}
    with pytest.raises(IllegalTransition, match="not a archived one|not a deprecated"):
        manual(check_applies(r, manual(r, "archive", "v1")), "rollback", "v1")


def test_promote_full_records_every_remaining_step():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 25.0))
    events = manual_events(r, "promote", "v2", actor="user:ann", reason="hotfix", full=True)
    # canary 25 -> 50 -> 75 -> stable: one event each, each on the position the last made
    assert [(e.to_state.value, e.traffic_percent) for e in events] == [
        ("canary", 50.0), ("canary", 75.0), ("stable", 0.0)]
    assert [e.position for e in events] == [r.applied, r.applied + 1, r.applied + 2]
    assert all(e.reason.startswith("hotfix (promote --full, step") for e in events)
    after = r
    for e in events:
        after = check_applies(after, e)
    assert states(after) == {"v1": ("deprecated", 0.0), "v2": ("stable", 0.0)}
    # from registered: shadow first, then every canary step
    r2 = boot(spec("v1", S.stable), spec("v3", S.registered))
    steps = manual_events(r2, "promote", "v3", actor="a", reason="r", full=True,
                          canary_steps=(10, 90))
    assert [e.to_state.value for e in steps] == ["shadow", "canary", "canary", "stable"]
    with pytest.raises(IllegalTransition, match="already stable"):
        manual_events(after, "promote", "v2", actor="a", reason="r", full=True)
    # a decision that got there first makes the rest stale: nothing applies out of order
    moved = check_applies(r, manual(r, "demote", "v2"))
    _, skip = apply_event(moved, events[0])
    assert skip is not None and skip.code == SkipCode.stale


def test_abort_sends_a_canary_back_to_shadow_and_pauses_it():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 50.0))
    events = manual_events(r, "abort", "v2", actor="user:ann", reason="p99 doubled")
    assert [e.action for e in events] == [A.demote, A.pause]
    for e in events:
        assert e.reason == "abort: p99 doubled"
        r = check_applies(r, e)
    assert states(r)["v2"] == ("shadow", 0.0) and r.versions["v2"].paused
    with pytest.raises(IllegalTransition, match="only a canary can be aborted; it is shadow"):
        manual_events(r, "abort", "v2", actor="a", reason="r")
    # already paused: the demote alone
    r = check_applies(r, manual(r, "canary", "v2", percent=5))
    assert [e.action for e in manual_events(r, "abort", "v2", actor="a", reason="r")] == [
        A.demote]
    with pytest.raises(IllegalTransition, match="unknown command 'abort'"):
        manual(r, "abort", "v2")


def test_an_abort_whose_pause_came_too_late_is_paused_again():
    r = boot(spec("v1", S.stable), spec("v2", S.canary, 50.0), spec("v3"))
    demote, pause = manual_events(r, "abort", "v2", actor="a", reason="r")
    # the demote applies; another event (a hold-free move of v3) takes the pause's position
    after = check_applies(r, demote)
    after = check_applies(after, manual(after, "pause", "v3"))
    _, why = apply_event(after, pause)
    assert why is not None and why.code == SkipCode.stale
    retry = abort_pause_again(after, [demote, pause], {demote.event_id: None,
                                                       pause.event_id: why})
    assert retry is not None and retry.event_id != pause.event_id
    assert retry.position == after.applied and retry.reason == pause.reason
    assert check_applies(after, retry).versions["v2"].paused
    # nothing to retry: the pause applied, the demote did not, or v2 moved meanwhile
    assert abort_pause_again(after, [demote, pause], {demote.event_id: None,
                                                      pause.event_id: None}) is None
    assert abort_pause_again(after, [demote, pause], {demote.event_id: why,
                                                      pause.event_id: why}) is None
    moved = check_applies(after, manual(after, "canary", "v2", percent=5))
    assert abort_pause_again(moved, [demote, pause], {demote.event_id: None,
                                                      pause.event_id: why}) is None
    assert abort_pause_again(after, [demote], {demote.event_id: None}) is None


def test_manual_refusals_are_one_line():
    r = boot(spec("v1", S.stable), spec("v2"))
    with pytest.raises(UnknownVersion, match="unknown version 'nope'; known: v1, v2"):
        manual(r, "pause", "nope")
    r = check_applies(r, manual(r, "archive", "v2"))
    for command in ("promote", "restore", "quarantine", "pause"):
        with pytest.raises(IllegalTransition) as info:
            manual(r, command, "v2")
        assert "\n" not in str(info.value) and "v2" in str(info.value)
    with pytest.raises(IllegalTransition, match="terminal"):
        manual(r, "restore", "v2")


def test_register_request_checks_everything():
    r = boot(spec("v1", S.stable))
    e = register_request(r, spec("v2"), actor="user:ann", reason="new model")
    assert e.position == r.applied and e.actor == "user:ann"
    r = check_applies(r, e)
    with pytest.raises(IllegalTransition, match="already registered"):
        register_request(r, spec("v2"), actor="a", reason="r")
    with pytest.raises(IllegalTransition, match="already has stable version v1"):
        register_request(r, spec("v3", S.stable), actor="a", reason="r")
    rules = [BlockRule(backend="fake", params={"model": "bad"}, reason="hallucinates")]
    with pytest.raises(IllegalTransition, match="blocklisted: fake with model='bad'"):
        register_request(r, spec("v4", params={"model": "bad", "x": 1}), actor="a",
                         reason="r", static_blocklist=rules)
    # bootstrap from the versions file leaves statically blocked specs out as well
    assert register_events([spec("v4", params={"model": "bad"})], r, blocklist=rules) == []


def test_a_skip_carries_a_code_callers_can_test():
    r = boot(spec("v1"))
    e = ev("v1", A.promote, S.canary, S.shadow, 50.0, eid="p1")
    r = applied(r, e)
    assert apply_event(r, e)[1].code == SkipCode.duplicate
    assert apply_event(r, ev("v9", A.archive, S.archived))[1].code == SkipCode.unknown_version
    stale = ev("v1", A.promote, S.canary, S.canary, 75.0, position=0)
    assert apply_event(r, stale)[1].code == SkipCode.stale
    assert apply_event(r, ev("v1", A.promote, S.stable, S.shadow))[1].code == \
        SkipCode.state_mismatch
