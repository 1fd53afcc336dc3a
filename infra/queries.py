"""The queries the leader runs on its timers, with ClickHouse bind parameters.

Every one reads a bounded time window and narrows by the leading columns of its table's sort
key (task, version, then the hour of the request's accepted time; see
infra/migrations/013_time_in_sort_keys.sql and docs/operations/storage.md), so its cost
follows the window's traffic, not the history stored. tests/test_timer_queries.py checks that
with `EXPLAIN indexes = 1`; bench/timer_queries.py measures it.

Values travel as server-side parameters (`{name:Type}`), never spliced into the text.
`Query.text()` renders the literal SQL for evidence and logs (`reviewbus explain` re-runs it).

Results carry a row's accepted time, which is never after its occurred_at (a result comes after
its request was accepted). A window on occurred_at is therefore also bounded on accepted_at,
`max_lag_s` earlier: results that took longer than that from intake to their answer are not
counted (REVIEWBUS_TIMER_MAX_LAG_S).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.rotation import LATENCY_SAMPLE, Window
from agents.slo import UNAVAILABLE_ERRORS, SloConfig
from schemas import CHANGE_TYPES

_PARAM = re.compile(r"\{(\w+):[^{}]+\}")
LIVE_ROLES = ("primary", "canary", "fallback")  # the roles that serve users


@dataclass(frozen=True)
class Query:
    """SQL with `{name:Type}` placeholders and their values."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The SQL with every parameter written as a literal (for evidence and logs)."""
        # Imported here: clickhouse_connect costs a CLI start ~60 ms to import, and a CLI
        # that talks to a running worker's store never needs it otherwise.
        from clickhouse_connect.driver.binding import format_query_value

        def literal(match: re.Match[str]) -> str:
            value = self.params[match.group(1)]
            return str(format_query_value(value))
        return _PARAM.sub(literal, self.sql)


def ms_string(value: datetime) -> str:
    """A datetime as the 'YYYY-MM-DD hh:mm:ss.fff' UTC text toDateTime64(..., 3, 'UTC') reads."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


# ---- rotation (streams/flows/rotation.py) ------------------------------------------------------


def _window(window: Window | float, max_lag_s: float, params: dict[str, Any]) -> str:
    """The time filter of a rotation window: occurred_at in it, accepted_at at most max_lag_s
    before its start (the sort key's time column)."""
    params["lag_ms"] = _ms(max_lag_s)
    if isinstance(window, Window):
        params["start"], params["end"] = ms_string(window.start), ms_string(window.end)
        start = "toDateTime64({start:String}, 3, 'UTC')"
        return (f"accepted_at >= {start} - toIntervalMillisecond({{lag_ms:UInt64}}) "
                f"AND occurred_at >= {start} "
                "AND occurred_at < toDateTime64({end:String}, 3, 'UTC')")
    params["window_ms"] = _ms(window)
    return ("accepted_at >= now64(3) - toIntervalMillisecond({window_ms:UInt64} + {lag_ms:UInt64}) "
            "AND occurred_at >= now64(3) - toIntervalMillisecond({window_ms:UInt64})")


def _repos_filter(repos: Sequence[str], params: dict[str, Any],
                  exclude: Sequence[str] = ()) -> str:
    """` AND repo IN {repos}` (` AND repo NOT IN {excluded}`) with bound parameters, or
    nothing for no repositories."""
    out = ""
    if repos:
        params["repos"] = sorted(repos)
        out += " AND repo IN {repos:Array(String)}"
    if exclude:
        params["excluded"] = sorted(exclude)
        out += " AND repo NOT IN {excluded:Array(String)}"
    return out


def interactions(task: str, version_id: str, window: Window | float, max_lag_s: float,
                 repos: Sequence[str] = (), exclude: Sequence[str] = ()) -> Query:
    """One version's live attempts in the window: counts, latencies of the ok ones (a fixed
    seed sample of at most LATENCY_SAMPLE, sorted), labels, cost. `repos`: those
    repositories' requests only; `exclude`: not those repositories' requests."""
    params: dict[str, Any] = {"task": task, "version": version_id}
    when = _window(window, max_lag_s, params)
    when += _repos_filter(repos, params, exclude)
    return Query(f"""SELECT count() AS n, countIf(status != 'ok') AS errors,
       arraySort(groupArraySampleIf({LATENCY_SAMPLE}, 1)(latency_ms, status = 'ok')) AS latencies,
       countIf(label IS NOT NULL AND status = 'ok') AS labelled,
       countIf(label IS NOT NULL AND status = 'ok' AND predicted_label = label) AS correct,
       sum(cost_usd) AS cost_sum, sum(cost_usd * cost_usd) AS cost_sumsq
FROM interactions FINAL
WHERE task = {{task:String}} AND version_id = {{version:String}} AND run_id = ''
  AND {when}""", params)


def agreement(task: str, version_id: str, window: Window | float, max_lag_s: float,
              against: str | None = None) -> Query:
    """How often a candidate's change type agreed with the version it was compared with;
    `against`: with that stable version only."""
    params: dict[str, Any] = {"task": task, "version": version_id}
    when = _window(window, max_lag_s, params)
    if against is not None:
        params["against"] = against
        when += " AND stable_version = {against:String}"
    return Query(f"""SELECT count() AS compared, countIf(change_type_agree = 1) AS agree
FROM shadow_comparisons FINAL
WHERE task = {{task:String}} AND candidate_version = {{version:String}}
  AND change_type_agree IS NOT NULL
  AND {when}""", params)


def measurement(task: str, candidate: str, stable: str | None, window: Window,
                max_lag_s: float, repos: Sequence[str] = (), exclude: Sequence[str] = ()
                ) -> dict[str, Query]:
    """The queries one rotation decision runs, by name: candidate, agreement, stable if any.
    `repos`: the candidate's scope; the stable version is then measured on those
    repositories' requests only (the candidate never sees another's). `exclude`: the
    repositories a narrower stable version serves (agents.routing.outside_of), left out on
    both sides, and the agreement counts comparisons with `stable` only (shadow_comparisons
    has no repository: comparisons with `stable` made on such a repository before its own
    stable version came still count)."""
    out = {"candidate": interactions(task, candidate, window, max_lag_s, exclude=exclude),
           "agreement": agreement(task, candidate, window, max_lag_s,
                                  against=stable if exclude else None)}
    if stable is not None:
        out["stable"] = interactions(task, stable, window, max_lag_s, repos=repos,
                                     exclude=exclude)
    return out


# ---- error budgets (streams/flows/quarantine.py check_budgets, `reviewbus slo`) ----------------


def slo(task: str, config: SloConfig, versions: Sequence[str], max_lag_s: float,
        since: Mapping[str, float] | None = None) -> Query:
    """Per version over config.window_s: n, ok, unavailable, errors, slow (ok but over its
    latency objective), latency quantiles. Live traffic only (run_id = ''), read with FINAL.

    `since` (version -> epoch seconds) starts a version's period later than the window: when
    it entered its current state, so a version restored from quarantine starts afresh."""
    ids = sorted(versions)
    params: dict[str, Any] = {
        "task": task, "window_ms": _ms(config.window_s), "lag_ms": _ms(max_lag_s),
        "lat_ids": ids, "lat_ms": [float(config.objectives(v).latency_ms) for v in ids],
        "default_ms": float(config.latency_ms),
    }
    unavailable = []
    for i, pattern in enumerate(UNAVAILABLE_ERRORS):
        params[f"unavailable{i}"] = pattern
        unavailable.append(f"ifNull(error, '') LIKE {{unavailable{i}:String}}")
    threshold = ("transform(toString(version_id), {lat_ids:Array(String)}, "
                 "{lat_ms:Array(Float64)}, {default_ms:Float64})")
    start = "now64(3) - toIntervalMillisecond({window_ms:UInt64})"
    if since:
        sids = sorted(since)
        params["since_ids"] = sids
        params["since_ms"] = [int(since[v] * 1000) for v in sids]
        start = (f"greatest({start}, fromUnixTimestamp64Milli(transform(toString(version_id), "
                 "{since_ids:Array(String)}, {since_ms:Array(Int64)}, toInt64(0))))")
    where = ["task = {task:String}", "run_id = ''",
             "accepted_at >= now64(3) - toIntervalMillisecond({window_ms:UInt64} + {lag_ms:UInt64})",
             f"occurred_at >= {start}"]
    if versions:
        params["versions"] = list(versions)
        where.append("version_id IN {versions:Array(String)}")
    return Query(
        "SELECT toString(version_id) AS version_id, count() AS n, "
        "countIf(status = 'ok') AS ok, "
        f"countIf(status = 'timeout' OR ({' OR '.join(unavailable)})) AS unavailable, "
        "countIf(status != 'ok') AS errors, "
        f"countIf(status = 'ok' AND latency_ms > {threshold}) AS slow, "
        "quantileExactIf(0.5)(latency_ms, status = 'ok') AS p50_ms, "
        "quantileExactIf(0.95)(latency_ms, status = 'ok') AS p95_ms "
        f"FROM interactions FINAL WHERE {' AND '.join(where)} "
        "GROUP BY version_id ORDER BY version_id", params)


# ---- false-positive filters (streams/flows/feedback.py) --------------------------------------


def verdicts(task: str, window_s: float, verdict_window_s: float, max_lag_s: float) -> Query:
    """Per version and rule: fingerprints of the window's findings judged false positive /
    confirmed (the latest verdict of the last `verdict_window_s`)."""
    return Query(
        "SELECT toString(f.version_id) AS version_id, toString(f.rule_id) AS rule_id, "
        "countIf(v.verdict = 'false_positive') AS fp, countIf(v.verdict = 'true_positive') AS tp "
        "FROM (SELECT DISTINCT version_id, rule_id, fingerprint FROM findings FINAL "
        "WHERE task = {task:String} AND run_id = '' "
        "AND accepted_at >= now64(3) - toIntervalMillisecond({window_ms:UInt64} + {lag_ms:UInt64}) "
        "AND occurred_at >= now64(3) - toIntervalMillisecond({window_ms:UInt64})) AS f "
        "INNER JOIN (SELECT fingerprint, argMax(verdict, occurred_at) AS verdict "
        "FROM feedback FINAL "
        "WHERE occurred_at >= now64(3) - toIntervalMillisecond({verdict_window_ms:UInt64}) "
        "GROUP BY fingerprint) AS v ON f.fingerprint = v.fingerprint "
        "GROUP BY version_id, rule_id ORDER BY version_id, rule_id",
        {"task": task, "window_ms": _ms(window_s), "lag_ms": _ms(max_lag_s),
         "verdict_window_ms": _ms(verdict_window_s)})


def fingerprint(value: str) -> Query:
    """The versions and rules that reported a fingerprint (the CLI checks feedback names one;
    not a timer: it reads every task and time)."""
    return Query("SELECT toString(version_id) AS version_id, toString(rule_id) AS rule_id, "
                 "count() AS n FROM findings FINAL "
                 "WHERE fingerprint = {fingerprint:String} GROUP BY version_id, rule_id "
                 "ORDER BY version_id, rule_id", {"fingerprint": value})


# ---- end-to-end repair (streams/flows/healing.py) --------------------------------------------


def unserved(task: str, after_s: float, window_s: float, limit: int = 500) -> Query:
    """Accepted requests of the window, older than after_s, with no served live result.

    The archive's occurred_at is the accepted time, and every result of a request carries it
    as accepted_at: both sides read the same window of the sort key."""
    return Query(
        "SELECT request_id, accepted FROM events_archive FINAL "
        "WHERE task = {task:String} "
        "AND occurred_at >= now64(3) - toIntervalMillisecond({window_ms:UInt64}) "
        "AND occurred_at <= now64(3) - toIntervalMillisecond({after_ms:UInt64}) "
        "AND request_id NOT IN (SELECT request_id FROM interactions FINAL "
        "WHERE task = {task:String} AND run_id = '' AND role IN {roles:Array(String)} "
        "AND accepted_at >= now64(3) - toIntervalMillisecond({window_ms:UInt64})) "
        "ORDER BY occurred_at LIMIT {limit:UInt32}",
        {"task": task, "window_ms": _ms(window_s), "after_ms": _ms(after_s),
         "roles": list(LIVE_ROLES), "limit": int(limit)})


# ---- quarantine re-tests (streams/flows/quarantine.py) ---------------------------------------


def archive_sample(task: str, n: int, window_s: float, repos: Sequence[str] = (),
                   exclude: Sequence[str] = ()) -> Query:
    """The newest n archived requests of the last window_s (the re-test's traffic); `repos`:
    those repositories' only (a version scoped to them sees no other); `exclude`: not those
    repositories' (served by a narrower stable version than the re-tested one's baseline)."""
    params: dict[str, Any] = {"task": task, "window_ms": _ms(window_s), "n": int(n)}
    return Query("SELECT accepted, occurred_at FROM events_archive FINAL "
                 "WHERE task = {task:String}" + _repos_filter(repos, params, exclude)
                 + " AND occurred_at >= now64(3) - toIntervalMillisecond({window_ms:UInt64}) "
                 "ORDER BY occurred_at DESC LIMIT {n:UInt32}", params)


def retest_results(task: str, version_id: str, run_id: str, accepted_from: datetime) -> Query:
    """A re-test run's results. Its requests are archived ones accepted at accepted_from or
    later (the oldest of the sample), and carry that accepted time."""
    return Query("SELECT request_id, status, latency_ms, label, predicted_label "
                 "FROM interactions FINAL "
                 "WHERE task = {task:String} AND version_id = {version:String} "
                 "AND run_id = {run_id:String} "
                 "AND accepted_at >= toDateTime64({accepted_from:String}, 3, 'UTC')",
                 {"task": task, "version": version_id, "run_id": run_id,
                  "accepted_from": ms_string(accepted_from)})


def stable_accuracy(task: str, stable: str, request_ids: Sequence[str],
                    accepted_from: datetime) -> Query:
    """The stable version's live change-type accuracy on these (re-tested) requests."""
    return Query("SELECT countIf(predicted_label = label) AS hits, count() AS n "
                 "FROM interactions FINAL "
                 "WHERE task = {task:String} AND version_id = {version:String} AND run_id = '' "
                 "AND accepted_at >= toDateTime64({accepted_from:String}, 3, 'UTC') "
                 "AND status = 'ok' AND label IS NOT NULL AND request_id IN {ids:Array(String)}",
                 {"task": task, "version": stable, "ids": list(request_ids),
                  "accepted_from": ms_string(accepted_from)})


# Every timer query, by name, for tests/test_timer_queries.py and bench/timer_queries.py.
TIMERS = ("rotation_candidate", "rotation_agreement", "rotation_stable", "slo_budget",
          "feedback_verdicts", "reconcile_unserved", "retest_sample", "retest_results",
          "retest_stable_accuracy")


# ---- learning loop (`reviewbus jobs`) --------------------------------------------------------


def training_jobs(task: str) -> Query:
    """The latest state of every training job of a task, newest first."""
    return Query(
        "SELECT job_id, argMax(state, occurred_at) AS state, argMax(kind, occurred_at) AS kind, "
        "argMax(version_id, occurred_at) AS version_id, argMax(repos, occurred_at) AS repos, "
        "argMax(data, occurred_at) AS data, argMax(out, occurred_at) AS out, "
        "argMax(metrics, occurred_at) AS metrics, argMax(error, occurred_at) AS error, "
        "min(occurred_at) AS queued_at, max(occurred_at) AS updated_at "
        "FROM training_jobs FINAL WHERE task = {task:String} "
        "GROUP BY job_id ORDER BY queued_at DESC, job_id",
        {"task": task})


_LABELLED = ("(label IS NOT NULL OR request_id IN (SELECT request_id FROM feedback FINAL "
             "WHERE startsWith(fingerprint, 'change_type:') AND request_id IS NOT NULL))")


def label_counts(task: str) -> Query:
    """Per repository, the commits training_archive would read (`labels`: feedback that drops
    a label is counted here, not there) and the `corrections`: requests intake labelled whose
    latest change-type feedback changes that label (relabels it, or drops it), each once;
    feedback that confirms intake's label, names no change type or drops a label the request
    does not have is not one. The learner agent's cheap look before it reads any rows."""
    labels = ("SELECT repo, uniqExact(sha) AS labels FROM events_archive FINAL "
              f"WHERE task = {{task:String}} AND {_LABELLED} GROUP BY repo")
    corrections = (
        "SELECT a.repo AS repo, count() AS corrections FROM (SELECT request_id, "
        "argMax(substring(fingerprint, 13), occurred_at) AS fb_label, "
        "argMax(verdict, occurred_at) AS fb_verdict FROM feedback FINAL "
        "WHERE startsWith(fingerprint, 'change_type:') AND request_id IS NOT NULL "
        "GROUP BY request_id) AS f INNER JOIN (SELECT request_id, any(repo) AS repo, "
        "any(label) AS intake_label FROM events_archive FINAL WHERE task = {task:String} AND "
        "label IS NOT NULL GROUP BY request_id) AS a ON f.request_id = a.request_id "
        "WHERE f.fb_label IN {change_types:Array(String)} AND ("
        "(f.fb_verdict = 'true_positive' AND f.fb_label != a.intake_label) OR "
        "(f.fb_verdict = 'false_positive' AND f.fb_label = a.intake_label)) GROUP BY a.repo")
    return Query(f"SELECT l.repo AS repo, l.labels AS labels, c.corrections AS corrections "
                 f"FROM ({labels}) AS l LEFT JOIN ({corrections}) AS c ON l.repo = c.repo "
                 "ORDER BY repo", {"task": task, "change_types": sorted(CHANGE_TYPES)})


def training_archive(task: str, since: datetime | None = None, *, newest: int = 0,
                     repos: Sequence[str] = (), exclude: Sequence[str] = ()) -> Query:
    """The archived requests with a change-type label or change-type feedback, oldest first
    per repository (the rows agents.learning.export.training_rows reads). `newest`: only each
    repository's newest that many (by arrival; 0: all); `repos` / `exclude`: only those
    repositories / not those."""
    where = ["task = {task:String}", _LABELLED]
    params: dict[str, Any] = {"task": task}
    if since is not None:
        where.append("occurred_at >= {since:DateTime64(3, 'UTC')}")
        params["since"] = since.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    filters = _repos_filter(repos, params, exclude)
    columns = "request_id, repo, sha, label, accepted, occurred_at"
    if newest <= 0:
        return Query(f"SELECT {columns} FROM events_archive FINAL WHERE {' AND '.join(where)}"
                     f"{filters} ORDER BY repo, occurred_at, request_id", params)
    params["newest"] = int(newest)
    return Query(f"SELECT * FROM (SELECT {columns} FROM events_archive FINAL "
                 f"WHERE {' AND '.join(where)}{filters} "
                 "ORDER BY repo, occurred_at DESC, request_id DESC LIMIT {newest:UInt32} BY repo) "
                 "ORDER BY repo, occurred_at, request_id", params)


def change_type_feedback() -> Query:
    """Every change-type feedback on a request, oldest first, with its request's repo and sha
    ('' when the request is not archived): feedback then labels its commit even when a reader
    of the archive left that request out."""
    fb = ("SELECT request_id, fingerprint, verdict, occurred_at, event_id FROM feedback FINAL "
          "WHERE startsWith(fingerprint, 'change_type:') AND request_id IS NOT NULL")
    return Query(
        f"SELECT f.request_id AS request_id, f.fingerprint AS fingerprint, f.verdict AS verdict, "
        f"f.occurred_at AS occurred_at, a.repo AS repo, a.sha AS sha FROM ({fb}) AS f "
        "LEFT JOIN (SELECT request_id, any(repo) AS repo, any(sha) AS sha FROM events_archive "
        "FINAL WHERE request_id IN (SELECT request_id FROM feedback FINAL WHERE "
        "startsWith(fingerprint, 'change_type:')) GROUP BY request_id) AS a "
        "ON f.request_id = a.request_id ORDER BY f.occurred_at, f.event_id")
