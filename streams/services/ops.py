"""Operations: feedback on findings, SLOs and error budgets, dead letters.

Reads go to ClickHouse (the local store, or the running worker's through its web port);
writes are events on the bus, never rows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import datetime
from typing import Any

from agents.errors import ReviewbusError
from agents.learning.export import FEEDBACK_PREFIX
from agents.settings import Settings
from infra import queries, queries_cli
from schemas import Feedback

from .. import names
from .common import current_registry, publish, store_for

# ---- feedback ------------------------------------------------------------------------------


def feedback(settings: Settings, fingerprint: str, verdict: str, *, version: str | None = None,
             request: str | None = None, note: str = "", actor: str, force: bool = False
             ) -> tuple[Feedback, str]:
    """Publish a verdict on a finding (or a change type); returns it and what it names."""
    with store_for(settings) as store:
        if fingerprint.startswith(FEEDBACK_PREFIX):
            where = _change_type_request(store, fingerprint, request, force)
        else:
            where = _stored_findings(store, fingerprint, force)
    event = Feedback(fingerprint=fingerprint, verdict=verdict, version_id=version,
                     request_id=request, actor=actor, note=note)
    asyncio.run(publish(settings, names.topic(settings, "feedback"),
                        [(fingerprint.encode(), event.model_dump_json().encode())]))
    return event, where


def _stored_findings(store, fingerprint: str, force: bool) -> str:
    query = queries.fingerprint(fingerprint)
    seen = store.query(query.sql, query.params).as_dicts()
    if not seen and not force:
        raise ReviewbusError(f"no finding with fingerprint {fingerprint!r} in the store "
                             "(check `reviewbus findings`, or --force)")
    return ", ".join(f"{r['version_id']}:{r['rule_id']}" for r in seen) or "no stored finding"


def _change_type_request(store, fingerprint: str, request: str | None, force: bool) -> str:
    """Change-type feedback names a label and the request whose commit it labels."""
    from schemas import CHANGE_TYPES

    label = fingerprint[len(FEEDBACK_PREFIX):]
    if label not in CHANGE_TYPES:
        raise ReviewbusError(f"unknown change type {label!r}; one of: {', '.join(CHANGE_TYPES)}")
    if not request:
        raise ReviewbusError("change-type feedback needs --request REQUEST_ID (the request_id "
                             "of `reviewbus findings --format json`)")
    query = queries_cli.archived_request(request)
    rows = store.query(query.sql, query.params).as_dicts()
    if not rows and not force:
        raise ReviewbusError(f"no archived request {request!r} in the store (or --force)")
    return ", ".join(f"commit {r['repo']}@{r['sha'][:12]}" for r in rows) or "no stored request"


# ---- slo -----------------------------------------------------------------------------------


def slo_rows(settings: Settings, versions: list[str], window_s: float | None = None
             ) -> list[dict[str, Any]]:
    from agents import slo
    from infra.config_file import load_config

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


# ---- dlq -----------------------------------------------------------------------------------


def dead_letters(settings: Settings, *, source: str | None = None,
                 error_contains: str | None = None, since: datetime | None = None,
                 limit: int = 100, ids: list[str] | None = None) -> list[dict]:
    """Dead letters, newest first; `source` with or without the topic prefix."""
    topic = None
    if source:
        topic = source if source.startswith(settings.topic_prefix) else names.topic(settings,
                                                                                     source)
    query = queries_cli.dead_letters(topic=topic, error_contains=error_contains, since=since,
                                     limit=limit, ids=ids or ())
    with store_for(settings) as store:
        return store.query(query.sql, query.params).as_dicts()


def payload_bytes(row: dict) -> bytes:
    if row.get("payload_encoding") == "base64":
        try:
            return base64.b64decode(row["payload"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ReviewbusError(f"dead letter {row['event_id']}: payload is not base64") from exc
    return str(row.get("payload", "")).encode("utf-8", "surrogatepass")


def replay_plan(settings: Settings, rows: list[dict]
                ) -> tuple[dict[str, list[tuple[bytes | None, bytes]]], list[tuple[str, str]]]:
    """Dead letters by the topic they go back to (oldest first), and those skipped, why."""
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
    return by_topic, skipped


def replay_dead_letters(settings: Settings,
                        by_topic: dict[str, list[tuple[bytes | None, bytes]]]) -> None:
    async def run() -> None:
        for topic, messages in sorted(by_topic.items()):
            await publish(settings, topic, messages)

    asyncio.run(run())
