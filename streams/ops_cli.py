"""Operations commands: `feedback`, `slo`, `dlq list`, `dlq replay` (issue 4).

Registered through streams/cli.py COMMAND_MODULES. Reads go to ClickHouse (the local store, or
the running worker's through its web port); writes are events on the bus, never rows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import getpass
import json
import os
import sys
from typing import Any

from agents.errors import ReviewbusError
from agents.learning.export import FEEDBACK_PREFIX
from agents.settings import Settings

from . import names

DLQ_COLUMNS = ("occurred_at", "event_id", "source_topic", "partition", "offset", "payload_size",
               "error")


def _actor() -> str:
    try:
        return f"user:{os.environ.get('USER') or getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


def add_commands(cmd) -> None:
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
    sp.add_argument("--actor", default=_actor())
    sp.add_argument("--force", action="store_true",
                    help="publish even when the store knows no finding with this fingerprint")

    sp = cmd("slo", cmd_slo, "SLOs and error budgets per version (availability, latency, "
                             "error rate) from ClickHouse")
    sp.add_argument("versions", nargs="*")
    sp.add_argument("--window", help="override the configured window, e.g. 1h")
    sp.add_argument("--format", choices=("table", "json"), default="table")

    sp = cmd("dlq", cmd_dlq_list, "dead letters: `dlq list` and `dlq replay`")
    sub = sp.add_subparsers(dest="dlq_command", metavar="COMMAND")
    ls = sub.add_parser("list", help="rejected messages with their reasons (from ClickHouse)")
    _dlq_filters(ls)
    ls.add_argument("--format", choices=("table", "json"), default="table")
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


# ---- feedback ------------------------------------------------------------------------------


def cmd_feedback(args, settings: Settings) -> int:
    from schemas import Feedback

    from .cli import store_for

    with store_for(settings) as store:
        if args.fingerprint.startswith(FEEDBACK_PREFIX):
            where = _change_type_request(store, args)
        else:
            where = _stored_findings(store, args)
    event = Feedback(fingerprint=args.fingerprint, verdict=args.verdict,
                     version_id=args.version, request_id=args.request, actor=args.actor,
                     note=args.note)
    asyncio.run(_publish(settings, "feedback", [(args.fingerprint.encode(),
                                                 event.model_dump_json().encode())]))
    word = "false positive" if args.verdict == "false_positive" else "confirmed"
    print(f"{args.fingerprint} marked {word} (event {event.event_id}; {where})")
    return 0


def _stored_findings(store, args) -> str:
    from infra import queries

    query = queries.fingerprint(args.fingerprint)
    seen = store.query(query.sql, query.params).as_dicts()
    if not seen and not args.force:
        raise ReviewbusError(f"no finding with fingerprint {args.fingerprint!r} in the store "
                             "(check `reviewbus findings`, or --force)")
    return ", ".join(f"{r['version_id']}:{r['rule_id']}" for r in seen) or "no stored finding"


def _change_type_request(store, args) -> str:
    """Change-type feedback names a label and the request whose commit it labels."""
    from schemas import CHANGE_TYPES

    label = args.fingerprint[len(FEEDBACK_PREFIX):]
    if label not in CHANGE_TYPES:
        raise ReviewbusError(f"unknown change type {label!r}; one of: {', '.join(CHANGE_TYPES)}")
    if not args.request:
        raise ReviewbusError("change-type feedback needs --request REQUEST_ID (the request_id "
                             "of `reviewbus findings --format json`)")
    rows = store.query("SELECT repo, sha FROM events_archive FINAL "
                       "WHERE request_id = {r:String}", {"r": args.request}).as_dicts()
    if not rows and not args.force:
        raise ReviewbusError(f"no archived request {args.request!r} in the store (or --force)")
    return ", ".join(f"commit {r['repo']}@{r['sha'][:12]}" for r in rows) or "no stored request"


async def _publish(settings: Settings, short_topic: str | None,
                   messages: list[tuple[bytes | None, bytes]], topic: str | None = None) -> int:
    from infra.broker import find_broker
    from infra.kafka import produce_all, start_producer

    bootstrap = find_broker(settings).address
    producer = await start_producer(settings, bootstrap)
    try:
        return await produce_all(producer, topic or names.topic(settings, short_topic or ""),
                                 messages)
    finally:
        await producer.stop()


# ---- slo -----------------------------------------------------------------------------------


def slo_rows(settings: Settings, versions: list[str], window_s: float | None = None
             ) -> list[dict[str, Any]]:
    from agents import slo
    from agents.config import load_config
    from infra import queries

    from .cli import current_registry, store_for

    config = load_config(settings.config)
    cfg = config.slo if window_s is None else config.slo.model_copy(update={"window_s": window_s})
    registry = current_registry(settings)
    known = sorted(set(registry.versions) | {v.id for v in config.versions})
    for v in versions:
        if v not in known:
            raise ReviewbusError(f"unknown version {v!r}; known: {', '.join(known)}")
    wanted = versions or known
    query = queries.slo(config.task, cfg, wanted, settings.timer_max_lag_s,
                        slo.since_of(registry))
    with store_for(settings) as store:
        rows = store.query(query.sql, query.params).as_dicts()
    out = []
    for report in slo.reports(rows, wanted, cfg):
        if report["version_id"] not in wanted:
            continue
        entry = registry.versions.get(report["version_id"])
        since = getattr(entry, "since", None) if entry else None
        out.append({"state": entry.state.value if entry else "-", **report,
                    "window_s": cfg.window_s,
                    "state_since": since.isoformat() if since else None})
    return out


def cmd_slo(args, settings: Settings) -> int:
    from agents.slo import SLO_COLUMNS

    from .reports import parse_window, render_table

    rows = slo_rows(settings, list(args.versions),
                    float(parse_window(args.window)) if args.window else None)
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    table = [{**r, "status": r["status"] + (f" ({', '.join(r['exhausted'])})"
                                             if r["exhausted"] else "")} for r in rows]
    print(render_table(table, SLO_COLUMNS))
    if rows:
        r = rows[0]
        print(f"\nwindow {r['window_s']:g} s (for a serving version: since it entered its "
              f"state), judged from {r['min_samples']} requests; objectives per version in "
              "`slo:` of the versions file; budget_left 1 = untouched, <= 0 = exhausted")
    return 0


# ---- dlq -----------------------------------------------------------------------------------


def dlq_sql(settings: Settings, *, source: str | None, error_contains: str | None,
            since, limit: int, ids: list[str] | None = None) -> str:
    from agents.rotation import quote

    where = []
    if source:
        topic = source if source.startswith(settings.topic_prefix) else names.topic(settings,
                                                                                     source)
        where.append(f"source_topic = {quote(topic)}")
    if error_contains:
        where.append(f"positionCaseInsensitive(error, {quote(error_contains)}) > 0")
    if since is not None:
        where.append(f"occurred_at >= toDateTime64({quote(since.isoformat())}, 3, 'UTC')")
    if ids:
        where.append("(" + " OR ".join(f"startsWith(event_id, {quote(i)})" for i in ids) + ")")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return (f"SELECT * FROM dead_letters FINAL{clause} ORDER BY occurred_at DESC, event_id "
            f"LIMIT {max(1, int(limit))}")


def dead_letters(settings: Settings, args, ids: list[str] | None = None) -> list[dict]:
    from .cli import parse_time, store_for

    sql = dlq_sql(settings, source=args.source, error_contains=args.error_contains,
                  since=parse_time(args.since), limit=args.limit, ids=ids)
    with store_for(settings) as store:
        return store.query(sql).as_dicts()


def cmd_dlq_list(args, settings: Settings) -> int:
    from .reports import render_table

    if getattr(args, "dlq_command", None) is None and not hasattr(args, "format"):
        raise ReviewbusError("say `reviewbus dlq list` or `reviewbus dlq replay`")
    rows = dead_letters(settings, args)
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    table = [{**r, "occurred_at": str(r["occurred_at"])[:19].replace("T", " "),
              "event_id": r["event_id"][:12],
              "error": r["error"] if len(r["error"]) <= 90 else r["error"][:89] + "~"}
             for r in rows]
    print(render_table(table, DLQ_COLUMNS))
    return 0


def payload_bytes(row: dict) -> bytes:
    if row.get("payload_encoding") == "base64":
        try:
            return base64.b64decode(row["payload"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ReviewbusError(f"dead letter {row['event_id']}: payload is not base64") from exc
    return str(row.get("payload", "")).encode("utf-8", "surrogatepass")


def cmd_dlq_replay(args, settings: Settings) -> int:
    if not args.ids and not (args.source or args.error_contains or args.since):
        raise ReviewbusError("name dead letters (EVENT_ID...) or filter them (--source, "
                             "--error, --since): replaying everything is never a default")
    for i in args.ids:
        if len(i) < 6:
            raise ReviewbusError(f"event id prefix {i!r} is too short (at least 6 characters)")
    rows = dead_letters(settings, args, ids=list(args.ids) or None)
    if not rows:
        raise ReviewbusError("no dead letters match")
    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
    skipped = []
    for row in sorted(rows, key=lambda r: (str(r["occurred_at"]), r["event_id"])):
        topic = str(row["source_topic"])
        if not topic.startswith(settings.topic_prefix):
            skipped.append((row["event_id"], f"source topic {topic} is not one of ours"))
            continue
        if int(row.get("payload_size") or 0) > len(payload_bytes(row)):
            skipped.append((row["event_id"], "payload was truncated in the DLQ"))
            continue
        key = row["key"].encode() if row.get("key") else None
        by_topic.setdefault(topic, []).append((key, payload_bytes(row)))
    for event_id, why in skipped:
        print(f"skipped {event_id}: {why}", file=sys.stderr)
    total = sum(len(m) for m in by_topic.values())
    if args.dry_run:
        for topic, messages in sorted(by_topic.items()):
            print(f"would replay {len(messages)} dead letters to {topic}")
        return 0

    async def run() -> None:
        for topic, messages in sorted(by_topic.items()):
            await _publish(settings, None, messages, topic=topic)

    asyncio.run(run())
    for topic, messages in sorted(by_topic.items()):
        print(f"replayed {len(messages)} dead letters to {topic}")
    if not total:
        raise ReviewbusError("nothing could be replayed")
    return 0
