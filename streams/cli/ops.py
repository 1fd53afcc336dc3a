"""`feedback`, `slo`, `dlq list`, `dlq replay`."""

from __future__ import annotations

import sys

from agents.errors import ReviewbusError
from agents.settings import Settings

from ..services import ops
from ..services.common import default_actor, parse_time, parse_window
from .render import add_format, clip, emit, render_table

DLQ_COLUMNS = ("occurred_at", "event_id", "source_topic", "partition", "offset", "payload_size",
               "error")


def register(cmd) -> None:
    sp = cmd("feedback", cmd_feedback,
             "mark a finding (by fingerprint) a false positive or confirmed; feeds the "
             "false-positive filter. `change_type:LABEL --request ID` confirms or rejects a "
             "request's change type for `export`")
    sp.add_argument("fingerprint", help="a finding's fingerprint, or change_type:LABEL")
    verdict = sp.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--false-positive", dest="verdict", action="store_const",
                         const="false_positive")
    verdict.add_argument("--confirmed", dest="verdict", action="store_const",
                         const="true_positive")
    sp.add_argument("--version", help="the version whose finding it was (informative)")
    sp.add_argument("--request", help="the request the finding came from (informative; "
                                      "required for change_type:LABEL)")
    sp.add_argument("--note", default="")
    sp.add_argument("--actor", default=default_actor())
    sp.add_argument("--force", action="store_true",
                    help="publish even when the store knows no finding with this fingerprint")

    sp = cmd("slo", cmd_slo, "SLOs and error budgets per version (availability, latency, "
                             "error rate) from ClickHouse")
    sp.add_argument("versions", nargs="*")
    sp.add_argument("--window", help="override the configured window, e.g. 1h")
    add_format(sp)

    sp = cmd("dlq", cmd_dlq_list, "dead letters: `dlq list` and `dlq replay`")
    sub = sp.add_subparsers(dest="dlq_command", metavar="COMMAND")
    ls = sub.add_parser("list", help="rejected messages with their reasons (from ClickHouse)")
    _dlq_filters(ls)
    add_format(ls)
    ls.set_defaults(func=cmd_dlq_list)
    rp = sub.add_parser("replay", help="re-publish dead letters to the topic they came from "
                                       "(after a fix: a raised limit, a new worker version)")
    rp.add_argument("ids", nargs="*", metavar="EVENT_ID", help="dead letters (id or prefix)")
    _dlq_filters(rp)
    rp.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    rp.set_defaults(func=cmd_dlq_replay)


def _dlq_filters(sp) -> None:
    sp.add_argument("--source", help="source topic (with or without the prefix), e.g. commits")
    sp.add_argument("--error", dest="error_contains", help="only letters whose reason has this")
    sp.add_argument("--since", help="ISO time or age like 2h")
    sp.add_argument("--limit", type=int, default=100)


def cmd_feedback(args, settings: Settings) -> int:
    event, where = ops.feedback(settings, args.fingerprint, args.verdict, version=args.version,
                                request=args.request, note=args.note, actor=args.actor,
                                force=args.force)
    word = "false positive" if args.verdict == "false_positive" else "confirmed"
    print(f"{args.fingerprint} marked {word} (event {event.event_id}; {where})")
    return 0


def cmd_slo(args, settings: Settings) -> int:
    from agents.slo import SLO_COLUMNS

    rows = ops.slo_rows(settings, list(args.versions),
                        float(parse_window(args.window)) if args.window else None)
    if args.format == "json":
        emit(rows, "json")
        return 0
    print(render_table([{**r, "status": r["status"] + (f" ({', '.join(r['exhausted'])})"
                                                       if r["exhausted"] else "")}
                        for r in rows], SLO_COLUMNS))
    if rows:
        r = rows[0]
        print(f"\nwindow {r['window_s']:g} s (for a serving version: since it entered its "
              f"state), judged from {r['min_samples']} requests; objectives per version in "
              "`slo:` of the versions file; budget_left 1 = untouched, <= 0 = exhausted")
    return 0


def _dead_letters(args, settings: Settings, ids: list[str] | None = None) -> list[dict]:
    return ops.dead_letters(settings, source=args.source, error_contains=args.error_contains,
                            since=parse_time(args.since), limit=args.limit, ids=ids)


def cmd_dlq_list(args, settings: Settings) -> int:
    if getattr(args, "dlq_command", None) is None and not hasattr(args, "format"):
        raise ReviewbusError("say `reviewbus dlq list` or `reviewbus dlq replay`")
    rows = _dead_letters(args, settings)
    if args.format == "table":
        rows = [{**r, "occurred_at": str(r["occurred_at"])[:19].replace("T", " "),
                 "event_id": r["event_id"][:12], "error": clip(r["error"], 90)} for r in rows]
    emit(rows, args.format, DLQ_COLUMNS)
    return 0


def cmd_dlq_replay(args, settings: Settings) -> int:
    if not args.ids and not (args.source or args.error_contains or args.since):
        raise ReviewbusError("name dead letters (EVENT_ID...) or filter them (--source, "
                             "--error, --since): replaying everything is never a default")
    for i in args.ids:
        if len(i) < 6:
            raise ReviewbusError(f"event id prefix {i!r} is too short (at least 6 characters)")
    rows = _dead_letters(args, settings, ids=list(args.ids) or None)
    if not rows:
        raise ReviewbusError("no dead letters match")
    by_topic, skipped = ops.replay_plan(settings, rows)
    for event_id, why in skipped:
        print(f"skipped {event_id}: {why}", file=sys.stderr)
    if args.dry_run:
        for topic, messages in sorted(by_topic.items()):
            print(f"would replay {len(messages)} dead letters to {topic}")
        return 0
    ops.replay_dead_letters(settings, by_topic)
    for topic, messages in sorted(by_topic.items()):
        print(f"replayed {len(messages)} dead letters to {topic}")
    if not by_topic:
        raise ReviewbusError("nothing could be replayed")
    return 0
