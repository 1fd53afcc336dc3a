"""The queries the CLI's use cases run (streams/services), with ClickHouse bind parameters.

Values travel as server-side parameters (`{name:Type}`), never spliced into the text; see
infra/queries.py for the `Query` type and the leader's timer queries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .queries import Query, ms_string

_WINDOW = "occurred_at >= now64(3) - toIntervalSecond({window_s:UInt32})"


# ---- lifecycle history (`decisions`, `explain`) ------------------------------------------------


def lifecycle_events(task: str) -> Query:
    return Query("SELECT * FROM lifecycle FINAL WHERE task = {task:String} "
                 "ORDER BY occurred_at, event_id LIMIT 1 BY event_id", {"task": task})


def lifecycle_event(task: str, id_prefix: str) -> Query:
    return Query("SELECT * FROM lifecycle FINAL WHERE task = {task:String} "
                 "AND startsWith(event_id, {prefix:String}) "
                 "ORDER BY occurred_at LIMIT 1 BY event_id", {"task": task, "prefix": id_prefix})


# ---- replay -------------------------------------------------------------------------------------


def archive(task: str, since: datetime | None, until: datetime | None,
            limit: int | None) -> Query:
    """The archived accepted changes of a time range, oldest first."""
    params: dict[str, Any] = {"task": task}
    where = ["task = {task:String}"]
    if since:
        params["since"] = ms_string(since)
        where.append("occurred_at >= toDateTime64({since:String}, 3, 'UTC')")
    if until:
        params["until"] = ms_string(until)
        where.append("occurred_at < toDateTime64({until:String}, 3, 'UTC')")
    sql = (f"SELECT accepted FROM events_archive FINAL WHERE {' AND '.join(where)} "
           "ORDER BY occurred_at, event_id")
    if limit:
        params["limit"] = int(limit)
        sql += " LIMIT {limit:UInt64}"
    return Query(sql, params)


def run_count(task: str, version_id: str, run_id: str, accepted_from: datetime,
              accepted_to: datetime) -> Query:
    """A replay's stored results, counted while `replay --wait` polls: bounded by the sort key
    (task, version, accepted hour) to the replayed range, so a poll reads that range's rows of
    the version, not the table. A replay's requests carry their archived accepted time, so the
    run's rows lie between the oldest and the newest of them (both cut to the millisecond, as
    the stored times are)."""
    return Query("SELECT count() AS n FROM interactions FINAL "
                 "WHERE task = {task:String} AND version_id = {version:String} "
                 "AND accepted_at >= toDateTime64({accepted_from:String}, 3, 'UTC') "
                 "AND accepted_at <= toDateTime64({accepted_to:String}, 3, 'UTC') "
                 "AND run_id = {run_id:String}",
                 {"task": task, "version": version_id, "run_id": run_id,
                  "accepted_from": ms_string(accepted_from),
                  "accepted_to": ms_string(accepted_to)})


def archived_request(request_id: str) -> Query:
    return Query("SELECT repo, sha FROM events_archive FINAL WHERE request_id = {r:String}",
                 {"r": request_id})


# ---- `compare` ----------------------------------------------------------------------------------


def compare(task: str, window_s: int, run_id: str | None) -> Query:
    return Query(f"""SELECT version_id, count() AS n,
       round(countIf(status != 'ok') / count(), 4) AS error_rate,
       round(quantileExactInclusiveIf(0.5)(latency_ms, status = 'ok'), 1) AS p50_ms,
       round(quantileExactInclusiveIf(0.95)(latency_ms, status = 'ok'), 1) AS p95_ms,
       round(quantileExactInclusiveIf(0.99)(latency_ms, status = 'ok'), 1) AS p99_ms,
       if(countIf(label IS NOT NULL AND status = 'ok') = 0, NULL,
          round(countIf(label IS NOT NULL AND predicted_label = label)
                / countIf(label IS NOT NULL AND status = 'ok'), 4)) AS accuracy
FROM interactions FINAL
WHERE task = {{task:String}} AND run_id = {{run_id:String}}
  AND {_WINDOW}
GROUP BY version_id ORDER BY version_id""",
                 {"task": task, "run_id": run_id or "", "window_s": int(window_s)})


def live_agreement(task: str, window_s: int) -> Query:
    return Query(f"""SELECT candidate_version AS version_id,
       round(avg(toFloat64(change_type_agree)), 4) AS agreement
FROM shadow_comparisons FINAL
WHERE task = {{task:String}} AND change_type_agree IS NOT NULL
  AND {_WINDOW}
GROUP BY candidate_version""", {"task": task, "window_s": int(window_s)})


def run_agreement(task: str, run_id: str, stable: str | None,
                  scoped: Mapping[str, str] | None = None) -> Query:
    """A replay run against the stable version's live answers on the same requests: for a
    request of a repository in `scoped` (repository -> the stable version of its own that
    serves it), that version's; for any other, `stable`'s."""
    params: dict[str, Any] = {"task": task, "run_id": run_id, "stable": stable or ""}
    served_by = "{stable:String}"
    if scoped:  # ClickHouse's transform.cpp refuses empty arrays (chDB 4.4 lets them pass)
        params["repos"] = sorted(scoped)
        params["stables"] = [scoped[r] for r in params["repos"]]
        served_by = "transform(repo, {repos:Array(String)}, {stables:Array(String)}, {stable:String})"
    return Query(f"""SELECT r.version_id AS version_id,
       round(avg(toFloat64(r.predicted_label = s.predicted_label)), 4) AS agreement
FROM (SELECT request_id, version_id, predicted_label FROM interactions FINAL
      WHERE task = {{task:String}} AND run_id = {{run_id:String}} AND status = 'ok') AS r
INNER JOIN (SELECT request_id, any(predicted_label) AS predicted_label FROM interactions FINAL
      WHERE task = {{task:String}} AND run_id = '' AND status = 'ok'
        AND version_id = {served_by}
      GROUP BY request_id) AS s
ON r.request_id = s.request_id
GROUP BY r.version_id""", params)


# ---- `compare --plot` ---------------------------------------------------------------------------


def span(task: str, window_s: int) -> Query:
    return Query(f"""SELECT min(occurred_at) AS first, max(occurred_at) AS last, count() AS n
FROM interactions FINAL
WHERE task = {{task:String}} AND run_id = '' AND {_WINDOW}""",
                 {"task": task, "window_s": int(window_s)})


def series(task: str, window_s: int, bucket_s: int) -> Query:
    return Query(f"""SELECT version_id,
       toStartOfInterval(occurred_at, toIntervalSecond({{bucket_s:UInt32}})) AS t,
       count() AS n, countIf(status != 'ok') / count() AS error_rate,
       quantileExactInclusiveIf(0.95)(latency_ms, status = 'ok') AS p95_ms,
       if(countIf(label IS NOT NULL AND status = 'ok') = 0, NULL,
          countIf(label IS NOT NULL AND status = 'ok' AND predicted_label = label)
          / countIf(label IS NOT NULL AND status = 'ok')) AS accuracy
FROM interactions FINAL
WHERE task = {{task:String}} AND run_id = '' AND {_WINDOW}
GROUP BY version_id, t ORDER BY version_id, t""",
                 {"task": task, "window_s": int(window_s), "bucket_s": int(bucket_s)})


def agreement_series(task: str, window_s: int, bucket_s: int) -> Query:
    return Query(f"""SELECT candidate_version AS version_id,
       toStartOfInterval(occurred_at, toIntervalSecond({{bucket_s:UInt32}})) AS t,
       avg(toFloat64(change_type_agree)) AS agreement
FROM shadow_comparisons FINAL
WHERE task = {{task:String}} AND change_type_agree IS NOT NULL AND {_WINDOW}
GROUP BY version_id, t ORDER BY version_id, t""",
                 {"task": task, "window_s": int(window_s), "bucket_s": int(bucket_s)})


def state_changes(task: str, window_s: int, unmarked: Sequence[str]) -> Query:
    """Lifecycle events of the window, except the `unmarked` actions."""
    return Query(f"""SELECT occurred_at, version_id, action, to_state, traffic_percent
FROM lifecycle FINAL
WHERE task = {{task:String}} AND action NOT IN {{unmarked:Array(String)}} AND {_WINDOW}
ORDER BY occurred_at LIMIT 1 BY event_id""",
                 {"task": task, "window_s": int(window_s), "unmarked": sorted(unmarked)})


# ---- `demo` -------------------------------------------------------------------------------------


def live_answers(task: str, request_ids: Sequence[str]) -> Query:
    """Stored live answers per version to these requests."""
    return Query("SELECT version_id, count() FROM interactions FINAL WHERE task = {task:String} "
                 "AND request_id IN {ids:Array(String)} AND run_id = '' GROUP BY version_id",
                 {"task": task, "ids": list(request_ids)})


# ---- `dlq` --------------------------------------------------------------------------------------


def dead_letters(*, topic: str | None, error_contains: str | None, since: datetime | None,
                 limit: int, ids: Sequence[str] = ()) -> Query:
    """Dead letters, newest first; `ids` are event id prefixes."""
    params: dict[str, Any] = {"limit": max(1, int(limit))}
    where = []
    if topic:
        params["topic"] = topic
        where.append("source_topic = {topic:String}")
    if error_contains:
        params["error"] = error_contains
        where.append("positionCaseInsensitive(error, {error:String}) > 0")
    if since is not None:
        params["since"] = ms_string(since)
        where.append("occurred_at >= toDateTime64({since:String}, 3, 'UTC')")
    if ids:
        for i, prefix in enumerate(ids):
            params[f"id{i}"] = prefix
        where.append("(" + " OR ".join(f"startsWith(event_id, {{id{i}:String}})"
                                       for i in range(len(ids))) + ")")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return Query(f"SELECT * FROM dead_letters FINAL{clause} ORDER BY occurred_at DESC, event_id "
                 "LIMIT {limit:UInt64}", params)
