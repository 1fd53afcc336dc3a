"""Lifecycle commands: `versions register|promote|...`, `decisions`, `explain`.

Every manual command is a LifecycleEvent with an actor and a reason, published to the
lifecycle topic after it was checked against the current registry (the fold of that topic):
an illegal move is refused with the fold's own one-line reason and nothing is published. The
event carries the registry position it was checked on; the command then reads the topic back
and says whether it applied (it is skipped should another event have got there first).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agents.config import load_config
from agents.errors import ConfigError, IllegalTransition, ReviewbusError, StoreError
from agents.registry import (
    IN_PLACE,
    MANUAL_COMMANDS,
    check_applies,
    fold,
    fold_annotated,
    manual_event,
    register_request,
)
from agents.settings import Settings
from schemas import LifecycleEvent, Registry, VersionSpec

from . import names

DECISION_COLUMNS = ("occurred_at", "event_id", "version_id", "action", "change", "actor",
                    "outcome", "applied", "reason")


def default_actor() -> str:
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"user:{user}"


# -- reading and writing the lifecycle topic ------------------------------------------------

def _bootstrap(settings: Settings) -> str:
    from infra.broker import find_broker

    return find_broker(settings).address


async def _read_events(settings: Settings, bootstrap: str) -> list[LifecycleEvent]:
    from infra.kafka import read_to_end

    raw = await read_to_end(settings, bootstrap, names.topic(settings, "lifecycle"))
    out = []
    for value in raw:
        try:
            out.append(LifecycleEvent.model_validate_json(value))
        except ValidationError:
            continue  # the workers dead-letter those; they change nothing
    return out


def read_registry(settings: Settings, task: str) -> tuple[Registry, str]:
    """The registry folded from the lifecycle topic (the broker must be up), and its address."""
    bootstrap = _bootstrap(settings)
    events = asyncio.run(_read_events(settings, bootstrap))
    registry = fold(task, events)
    if not registry.versions:
        raise ReviewbusError("the lifecycle topic holds no versions yet (has a worker started "
                             "with this REVIEWBUS_TOPIC_PREFIX?)")
    return registry, bootstrap


async def _publish(settings: Settings, bootstrap: str, events: list[LifecycleEvent]) -> None:
    from infra.kafka import produce_all, start_producer

    producer = await start_producer(settings, bootstrap)
    try:
        await produce_all(producer, names.topic(settings, "lifecycle"),
                          ((e.version_id.encode(), e.model_dump_json().encode()) for e in events))
    finally:
        await producer.stop()


def publish_and_confirm(settings: Settings, bootstrap: str, task: str,
                        events: list[LifecycleEvent]) -> tuple[Registry, dict[str, str | None]]:
    """Publish, read the topic back, and say for each event whether the fold applied it."""
    async def run() -> list[LifecycleEvent]:
        await _publish(settings, bootstrap, events)
        return await _read_events(settings, bootstrap)

    history = asyncio.run(run())
    registry, annotated = fold_annotated(task, history)
    wanted = {e.event_id for e in events}
    outcome: dict[str, str | None] = {}
    for event, skipped in annotated:
        if event.event_id in wanted and event.event_id not in outcome:
            outcome[event.event_id] = skipped
    return registry, outcome


# -- versions <command> ---------------------------------------------------------------------

def describe_state(registry: Registry, version_id: str) -> str:
    entry = registry.versions.get(version_id)
    if entry is None:
        return "unknown"
    text = entry.state.value
    if entry.state.value == "canary":
        text += f" {entry.traffic_percent:g}%"
    return text + (" (paused)" if entry.paused else "")


def cmd_manual(args, settings: Settings) -> int:
    config = load_config(settings.config)
    registry, bootstrap = read_registry(settings, config.task)
    event = manual_event(registry, args.lifecycle_command, getattr(args, "version", None),
                         actor=args.actor, reason=args.reason,
                         percent=getattr(args, "percent", None),
                         canary_steps=config.rotation.canary_steps)
    before = describe_state(registry, event.version_id)
    after_reg, outcome = publish_and_confirm(settings, bootstrap, config.task, [event])
    skipped = outcome.get(event.event_id, "not found on the topic after publishing")
    if skipped:
        raise IllegalTransition(f"{args.lifecycle_command} {event.version_id}: not applied: "
                                f"{getattr(skipped, 'text', skipped)}")
    after = describe_state(after_reg, event.version_id)
    print(f"{args.lifecycle_command} {event.version_id}: {before} -> {after} "
          f"(event {event.event_id}, {event.actor}: {event.reason})")
    stable = next((v for v, e in after_reg.versions.items() if e.state.value == "stable"), None)
    if stable and stable != event.version_id and args.lifecycle_command == "rollback":
        print(f"stable version: {stable}")
    return 0


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
    items = data if isinstance(data, list) else [data]
    specs = []
    for item in items:
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


def cmd_register(args, settings: Settings) -> int:
    config = load_config(settings.config)
    registry, bootstrap = read_registry(settings, config.task)
    specs = load_specs(Path(args.file), config.task)
    reason = args.reason or f"registered from {args.file}"
    # Several specs: each is checked on the registry the previous ones produce.
    checked: list[LifecycleEvent] = []
    current = registry
    for spec in specs:
        event = register_request(current, spec, actor=args.actor, reason=reason,
                                 static_blocklist=config.blocklist)
        current = check_applies(current, event)
        checked.append(event)
    after, outcome = publish_and_confirm(settings, bootstrap, config.task, checked)
    for event in checked:
        skipped = outcome.get(event.event_id, "not found on the topic after publishing")
        if skipped:
            raise IllegalTransition(f"register {event.version_id}: not applied: "
                                    f"{getattr(skipped, 'text', skipped)}")
        print(f"registered {event.version_id} as {describe_state(after, event.version_id)} "
              f"(event {event.event_id}, {event.actor})")
        if config.spec(event.version_id) is None:
            print(f"note: {event.version_id} is not in the workers' versions file "
                  f"({settings.config or 'the packaged default'}); it is served once the "
                  "workers run with it there")
    return 0


def add_version_commands(versions_parser) -> None:
    """Subcommands of `reviewbus versions` (its bare form still lists the versions)."""
    sub = versions_parser.add_subparsers(dest="lifecycle_command", title="lifecycle commands",
                                         metavar="COMMAND")

    def common(sp, reason_required: bool = True) -> None:
        sp.add_argument("--reason", required=reason_required,
                        help="why (recorded with the event)")
        sp.add_argument("--actor", default=default_actor(),
                        help="who (default: user:$USER)")

    sp = sub.add_parser("register", help="register the version spec(s) of a YAML file")
    sp.add_argument("file", help="YAML: a spec, a list of specs, or a versions file")
    common(sp, reason_required=False)
    sp.set_defaults(func=cmd_register)
    helps = {
        "promote": "one step up: registered -> shadow -> canary steps -> stable",
        "demote": "one step down: a canary to the previous step, or to shadow",
        "rollback": "stable -> deprecated and the previous stable back (no VERSION: the "
                    "stable one); a canary -> shadow; a deprecated VERSION -> stable",
        "pause": "the rotation agent leaves this version where it is",
        "resume": "the rotation agent may move this version again",
        "canary": "serve PERCENT of primary traffic with this version (shadow or canary)",
        "quarantine": "no traffic; its backend/parameters go on the blocklist",
        "restore": "quarantined -> shadow (and off the blocklist)",
        "archive": "retire a version for good",
        "block": "put this version's backend/parameters on the blocklist",
        "unblock": "take this version's backend/parameters off the blocklist",
    }
    for name in MANUAL_COMMANDS:
        sp = sub.add_parser(name, help=helps[name], description=helps[name])
        sp.add_argument("version", nargs="?" if name == "rollback" else None)
        if name == "canary":
            sp.add_argument("percent", type=float)
        common(sp)
        sp.set_defaults(func=cmd_manual)


# -- decisions ------------------------------------------------------------------------------

def lifecycle_rows(store, task: str) -> list[dict]:
    from agents.rotation import quote

    return store.query(
        f"SELECT * FROM lifecycle FINAL WHERE task = {quote(task)} "
        f"ORDER BY occurred_at, event_id LIMIT 1 BY event_id").as_dicts()


def _short_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    return text[:19].replace("T", " ")


def _change(event: LifecycleEvent) -> str:
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

    events = [lifecycle_event_from_row(r) for r in lifecycle_rows(store, task)]
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
            "change": _change(event), "actor": event.actor,
            "outcome": ev.get("outcome"), "gate_set": ev.get("gate_set"),
            "applied": "yes" if skipped is None else "skipped: " + skipped.text,
            "reason": event.reason, "position": event.position, "evidence": ev,
        })
    return out


def cmd_decisions(args, settings: Settings) -> int:
    from .cli import store_for
    from .reports import render_table

    task = load_config(settings.config).task
    with store_for(settings) as store:
        rows = decision_rows(store, task, args.version)
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    table = []
    for r in rows:
        reason = r["reason"] or ""
        table.append({**r, "occurred_at": _short_time(r["occurred_at"]),
                      "event_id": r["event_id"][:12],
                      "outcome": r["outcome"] or "-",
                      "applied": r["applied"] if len(r["applied"]) <= 40
                      else r["applied"][:39] + "~",
                      "reason": reason if len(reason) <= 70 else reason[:69] + "~"})
    print(render_table(table, DECISION_COLUMNS))
    return 0


# -- explain --------------------------------------------------------------------------------

def find_event_row(store, task: str, event_id: str) -> dict:
    from agents.rotation import quote

    if len(event_id) < 6:
        raise ReviewbusError("give at least 6 characters of the event id")
    rows = store.query(
        f"SELECT * FROM lifecycle FINAL WHERE task = {quote(task)} "
        f"AND startsWith(event_id, {quote(event_id)}) "
        f"ORDER BY occurred_at LIMIT 1 BY event_id").as_dicts()
    if not rows:
        raise ReviewbusError(f"no lifecycle event {event_id!r} in the store")
    if len({r["event_id"] for r in rows}) > 1:
        raise ReviewbusError(f"event id prefix {event_id!r} is ambiguous: "
                             + ", ".join(r["event_id"] for r in rows[:5]))
    return rows[0]


def explain(store, settings: Settings, event_id: str) -> dict[str, Any]:
    from agents.rotation import reevaluate
    from infra.readback import lifecycle_event_from_row

    config = load_config(settings.config)
    event = lifecycle_event_from_row(find_event_row(store, config.task, event_id))
    evidence = event.evidence or {}
    out: dict[str, Any] = {
        "event_id": event.event_id, "version_id": event.version_id,
        "action": event.action.value, "change": _change(event), "actor": event.actor,
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


def _fmt_num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _gate_cell(g: dict | None) -> str:
    if not g:
        return "-"
    lo, hi = (g.get("interval") or [None, None])[:2]
    return f"{g['outcome']} {_fmt_num(g.get('estimate'))} [{_fmt_num(lo)}, {_fmt_num(hi)}]"


def render_explain(info: dict[str, Any]) -> str:
    from .reports import render_table

    lines = [f"event {info['event_id']}: {info['action']} {info['version_id']} "
             f"{info['change']} by {info['actor']} at {info['occurred_at']}",
             f"reason: {info['reason'] or '-'}"]
    result = info.get("rerun")
    if result is None:
        lines.append(info.get("note", ""))
        return "\n".join(lines)
    w = info.get("window") or {}
    lines.append(f"gate set {info['gate_set']} (config {info['config_hash']}), stable "
                 f"{info.get('stable_version') or '-'}, window {w.get('start')} .. "
                 f"{w.get('end')} ({w.get('seconds')} s, {w.get('scope')})")
    same = "the same decision" if result["same_outcome"] else "a DIFFERENT decision"
    numbers = "the same numbers" if result["same_numbers"] else "different numbers (data changed)"
    lines.append(f"then: {result['then']['outcome']} -> {info.get('verdict')}")
    lines.append(f"now:  {result['now']['outcome']} with the stored gate config, on "
                 f"{numbers}: {same}")
    current = result.get("now_current_config")
    if current:
        changed = "changed since" if current["config_changed"] else "unchanged"
        lines.append(f"      {current['outcome']} with today's config ({changed}, "
                     f"{current['config_hash']})")
    then = {g["name"]: g for g in info.get("then_gates", [])}
    now = {g["name"]: g for g in result["now"]["detail"]}
    today = (current or {}).get("gates", {})
    rows = [{"gate": name, "threshold": _fmt_num((then.get(name) or now.get(name) or {})
                                                 .get("threshold")),
             "then": _gate_cell(then.get(name)), "now": _gate_cell(now.get(name)),
             "today's config": today.get(name, "-")}
            for name in dict.fromkeys([*then, *now, *today])]
    columns = ("gate", "threshold", "then", "now") + (("today's config",) if current else ())
    lines.append(render_table(rows, columns))
    return "\n".join(lines)


def cmd_explain(args, settings: Settings) -> int:
    from .cli import store_for

    with store_for(settings) as store:
        info = explain(store, settings, args.event_id)
    if args.format == "json":
        print(json.dumps(info, indent=2, default=str))
    else:
        print(render_explain(info))
    return 0


def add_commands(cmd) -> None:
    sp = cmd("decisions", cmd_decisions,
             "lifecycle decisions (oldest first) with their evidence and whether they applied")
    sp.add_argument("version", nargs="?")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp = cmd("explain", cmd_explain,
             "re-run a decision's stored queries and say whether it would decide the same today")
    sp.add_argument("event_id")
    sp.add_argument("--format", choices=("table", "json"), default="table")


__all__ = ["add_commands", "add_version_commands"]
