"""`versions` (list; register|promote|demote|rollback|...), `decisions`, `explain`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.lifecycle_commands import MANUAL_COMMANDS
from agents.settings import Settings
from infra.config_file import load_config

from ..services import lifecycle
from ..services.common import current_registry, default_actor, store_for
from ..services.reports import versions_rows
from .render import add_format, clip, emit, render_table, to_json

DECISION_COLUMNS = ("occurred_at", "event_id", "version_id", "action", "change", "actor",
                    "outcome", "applied", "reason")
HELPS = {
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
    "abort": "a canary straight back to shadow, and paused so the rotation agent leaves it "
             "there (`versions resume` lets it move again)",
}


def register(cmd) -> None:
    sp = cmd("versions", cmd_versions, "versions, their states and traffic; lifecycle commands")
    add_format(sp)
    # Its bare form lists the versions; every lifecycle command is a subcommand.
    sub = sp.add_subparsers(dest="lifecycle_command", title="lifecycle commands",
                            metavar="COMMAND")

    def common(sp, reason_required: bool = True) -> None:
        sp.add_argument("--reason", required=reason_required,
                        help="why (recorded with the event)")
        sp.add_argument("--actor", default=default_actor(), help="who (default: user:$USER)")

    sp = sub.add_parser("register", help="register the version spec(s) of a YAML file")
    sp.add_argument("file", help="YAML: a spec, a list of specs, or a versions file")
    common(sp, reason_required=False)
    sp.set_defaults(func=cmd_register)
    for name in MANUAL_COMMANDS:
        sp = sub.add_parser(name, help=HELPS[name], description=HELPS[name])
        sp.add_argument("version", nargs="?" if name == "rollback" else None)
        if name == "canary":
            sp.add_argument("percent", type=float)
        if name == "promote":
            sp.add_argument("--full", action="store_true",
                            help="straight to stable through every remaining step, one "
                                 "recorded event each (Argo Rollouts' promote --full)")
        common(sp)
        sp.set_defaults(func=cmd_manual)

    sp = cmd("decisions", cmd_decisions,
             "lifecycle decisions (oldest first) with their evidence and whether they applied")
    sp.add_argument("version", nargs="?")
    add_format(sp)
    sp = cmd("explain", cmd_explain,
             "re-run a decision's stored queries and say whether it would decide the same today")
    sp.add_argument("event_id")
    add_format(sp)


def cmd_versions(args, settings: Settings) -> int:
    emit(versions_rows(current_registry(settings)), args.format)
    return 0


def cmd_manual(args, settings: Settings) -> int:
    done = lifecycle.manual(settings, args.lifecycle_command, getattr(args, "version", None),
                            actor=args.actor, reason=args.reason,
                            percent=getattr(args, "percent", None),
                            full=getattr(args, "full", False))
    event = done["event"]
    command = args.lifecycle_command + (" --full" if getattr(args, "full", False) else "")
    print(f"{command} {event.version_id}: {done['before']} -> {done['after']} "
          f"(event {event.event_id}, {event.actor}: {event.reason})")
    if len(done["events"]) > 1:
        print("  steps, one event each: " + " -> ".join(done["steps"]))
    if done["stable"] and done["stable"] != event.version_id and args.lifecycle_command == "rollback":
        print(f"stable version: {done['stable']}")
    return 0


def cmd_register(args, settings: Settings) -> int:
    for done in lifecycle.register(settings, Path(args.file), actor=args.actor,
                                   reason=args.reason):
        event = done["event"]
        if done["error"]:
            raise done["error"]
        print(f"registered {event.version_id} as {done['state']} "
              f"(event {event.event_id}, {event.actor})")
        if done["unlisted"]:
            print(f"note: {event.version_id} is not in the workers' versions file "
                  f"({settings.config or 'the packaged default'}); running workers serve "
                  "it at once through their shared pool topic, on its own from their next start")
    return 0


def _short_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(value)[:19].replace("T", " ")


def cmd_decisions(args, settings: Settings) -> int:
    task = load_config(settings.config).task
    with store_for(settings) as store:
        rows = lifecycle.decision_rows(store, task, args.version)
    if args.format == "table":
        rows = [{**r, "occurred_at": _short_time(r["occurred_at"]),
                 "event_id": r["event_id"][:12], "outcome": r["outcome"] or "-",
                 "applied": clip(r["applied"], 40), "reason": clip(r["reason"], 70)}
                for r in rows]
    emit(rows, args.format, DECISION_COLUMNS)
    return 0


def cmd_explain(args, settings: Settings) -> int:
    with store_for(settings) as store:
        info = lifecycle.explain(store, settings, args.event_id)
    print(to_json(info) if args.format == "json" else render_explain(info))
    return 0


def _fmt_num(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _gate_cell(g: dict | None) -> str:
    if not g:
        return "-"
    lo, hi = (g.get("interval") or [None, None])[:2]
    return f"{g['outcome']} {_fmt_num(g.get('estimate'))} [{_fmt_num(lo)}, {_fmt_num(hi)}]"


def render_explain(info: dict[str, Any]) -> str:
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

