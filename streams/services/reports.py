"""Reading the store: version comparison (and its series over time), versions, read-only SQL."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

from agents.registry import IN_PLACE
from agents.routing import stable_version, traffic_table
from infra import queries_cli as q
from infra.readback import registry_from_store
from schemas import LifecycleAction, Registry, VersionState

COMPARE_COLUMNS = ("version_id", "state", "n", "error_rate", "p50_ms", "p95_ms", "p99_ms",
                   "accuracy", "agreement")
# Events that change no state (and registrations) are not marked on the plot.
UNMARKED = tuple(sorted(a.value for a in (*IN_PLACE, LifecycleAction.register)))
SERIES = ("p95_ms", "error_rate", "accuracy", "agreement")


def _rows(store, query: q.Query) -> list[dict]:
    return store.query(query.sql, query.params).as_dicts()


def compare(store, task: str, window_s: int, run_id: str | None = None,
            versions: Sequence[str] = ()) -> list[dict]:
    registry = registry_from_store(store, task)
    stable = stable_version(registry)
    rows = {r["version_id"]: r for r in _rows(store, q.compare(task, window_s, run_id))}
    if run_id:
        scoped = scoped_stables(registry)
        agreement_rows = (_rows(store, q.run_agreement(task, run_id, stable, scoped))
                          if stable or scoped else [])
    else:
        agreement_rows = _rows(store, q.live_agreement(task, window_s))
    agreement = {r["version_id"]: r["agreement"] for r in agreement_rows}
    out = []
    for vid in sorted(set(rows) | set(registry.versions)):
        if versions and vid not in versions:
            continue
        row = rows.get(vid, {})
        entry = registry.versions.get(vid)
        out.append({
            "version_id": vid, "state": entry.state.value if entry else "unknown",
            "n": int(row.get("n") or 0), "error_rate": row.get("error_rate"),
            "p50_ms": row.get("p50_ms"), "p95_ms": row.get("p95_ms"), "p99_ms": row.get("p99_ms"),
            "accuracy": row.get("accuracy"),
            "agreement": None if vid == stable else agreement.get(vid),
        })
    return out


def scoped_stables(registry: Registry) -> dict[str, str]:
    """Repository -> the stable version that serves it, for every repository some stable
    version is scoped to (the others: the global stable)."""
    repos = {r for e in registry.versions.values() if e.state == VersionState.stable
             for r in e.spec.repos}
    return {r: v for r in sorted(repos) if (v := stable_version(registry, repo=r)) is not None}


def versions_rows(registry: Registry) -> list[dict]:
    shares = traffic_table(registry)
    return [{"version_id": v, "state": e.state.value, "traffic_percent": shares.get(v, 0.0),
             "backend": e.spec.backend, "scope": ", ".join(e.spec.repos) or "all"}
            for v, e in sorted(registry.versions.items())]


def sql(store, text: str) -> tuple[list[dict], list[str]]:
    """A read-only query of the user's: its rows and columns."""
    result = store.query(text, readonly=True)
    return result.as_dicts(), list(result.columns)


# ---- each version over time (`compare --plot`) -------------------------------------------------


def bucket_seconds(span_s: float, buckets: int = 40) -> int:
    """Bucket width so that the traffic's actual time span holds about `buckets` points."""
    return max(1, int(math.ceil(span_s / buckets)))


def _time(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def collect(store, task: str, window_s: int, versions: Sequence[str] = ()) -> dict:
    """The numbers the plot draws: {series: {version: {metric: [(t, value)]}}, changes: [...]}."""
    span = _rows(store, q.span(task, window_s))
    if not span or not span[0].get("n"):
        return {"bucket_s": 0, "series": {}, "changes": []}
    bucket_s = bucket_seconds((_time(span[0]["last"]) - _time(span[0]["first"])).total_seconds())
    series: dict[str, dict[str, list]] = {}
    for row in _rows(store, q.series(task, window_s, bucket_s)):
        if versions and row["version_id"] not in versions:
            continue
        per = series.setdefault(row["version_id"], {m: [] for m in SERIES})
        for metric in ("p95_ms", "error_rate", "accuracy"):
            if row.get(metric) is not None:
                per[metric].append((_time(row["t"]), float(row[metric])))
    for row in _rows(store, q.agreement_series(task, window_s, bucket_s)):
        if versions and row["version_id"] not in versions:
            continue
        per = series.setdefault(row["version_id"], {m: [] for m in SERIES})
        if row.get("agreement") is not None:
            per["agreement"].append((_time(row["t"]), float(row["agreement"])))
    changes = [
        {"at": _time(r["occurred_at"]), "version_id": r["version_id"], "action": r["action"],
         "state": r["to_state"] + (f" {r['traffic_percent']:g}%" if r["to_state"] == "canary"
                                   else "")}
        for r in _rows(store, q.state_changes(task, window_s, UNMARKED))
        if not versions or r["version_id"] in versions
    ]
    return {"bucket_s": bucket_s, "series": series, "changes": changes}
