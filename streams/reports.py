"""Reading the store for people: version comparison, versions, read-only SQL, tables."""

from __future__ import annotations

import json
from collections.abc import Sequence

from agents.registry import traffic_table
from agents.rotation import quote
from agents.routing import stable_version
from infra.readback import registry_from_store
from schemas import Registry

COMPARE_COLUMNS = ("version_id", "state", "n", "error_rate", "p50_ms", "p95_ms", "p99_ms",
                   "accuracy", "agreement")


def parse_window(text: str) -> int:
    """'90s', '15m', '24h', '7d' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(float(text))
    except ValueError as exc:
        from agents.errors import ReviewbusError

        raise ReviewbusError(f"bad window {text!r}: use e.g. 90s, 15m, 24h, 7d") from exc


def compare_sql(task: str, window_s: int, run_id: str | None) -> str:
    scope = f"run_id = {quote(run_id)}" if run_id else "run_id = ''"
    return f"""SELECT version_id, count() AS n,
       round(countIf(status != 'ok') / count(), 4) AS error_rate,
       round(quantileExactInclusiveIf(0.5)(latency_ms, status = 'ok'), 1) AS p50_ms,
       round(quantileExactInclusiveIf(0.95)(latency_ms, status = 'ok'), 1) AS p95_ms,
       round(quantileExactInclusiveIf(0.99)(latency_ms, status = 'ok'), 1) AS p99_ms,
       if(countIf(label IS NOT NULL AND status = 'ok') = 0, NULL,
          round(countIf(label IS NOT NULL AND predicted_label = label)
                / countIf(label IS NOT NULL AND status = 'ok'), 4)) AS accuracy
FROM interactions FINAL
WHERE task = {quote(task)} AND {scope}
  AND occurred_at >= now64(3) - INTERVAL {int(window_s)} SECOND
GROUP BY version_id ORDER BY version_id"""


def live_agreement_sql(task: str, window_s: int) -> str:
    return f"""SELECT candidate_version AS version_id,
       round(avg(toFloat64(change_type_agree)), 4) AS agreement
FROM shadow_comparisons FINAL
WHERE task = {quote(task)} AND change_type_agree IS NOT NULL
  AND occurred_at >= now64(3) - INTERVAL {int(window_s)} SECOND
GROUP BY candidate_version"""


def run_agreement_sql(task: str, run_id: str, stable: str) -> str:
    """A replay run against the stable version's live answers on the same requests."""
    return f"""SELECT r.version_id AS version_id,
       round(avg(toFloat64(r.predicted_label = s.predicted_label)), 4) AS agreement
FROM (SELECT request_id, version_id, predicted_label FROM interactions FINAL
      WHERE task = {quote(task)} AND run_id = {quote(run_id)} AND status = 'ok') AS r
INNER JOIN (SELECT request_id, any(predicted_label) AS predicted_label FROM interactions FINAL
      WHERE task = {quote(task)} AND run_id = '' AND version_id = {quote(stable)}
        AND status = 'ok' GROUP BY request_id) AS s
ON r.request_id = s.request_id
GROUP BY r.version_id"""


def compare(store, task: str, window_s: int, run_id: str | None = None,
            versions: Sequence[str] = ()) -> list[dict]:
    registry = registry_from_store(store, task)
    stable = stable_version(registry)
    rows = {r["version_id"]: r for r in store.query(compare_sql(task, window_s, run_id)).as_dicts()}
    if run_id:
        agreement_rows = store.query(run_agreement_sql(task, run_id, stable)).as_dicts() \
            if stable else []
    else:
        agreement_rows = store.query(live_agreement_sql(task, window_s)).as_dicts()
    agreement = {r["version_id"]: r["agreement"] for r in agreement_rows}
    ids = sorted(set(rows) | set(registry.versions))
    out = []
    for vid in ids:
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


def versions_rows(registry: Registry) -> list[dict]:
    shares = traffic_table(registry)
    return [{"version_id": v, "state": e.state.value, "traffic_percent": shares.get(v, 0.0),
             "backend": e.spec.backend, "scope": ", ".join(e.spec.repos) or "all"}
            for v, e in sorted(registry.versions.items())]


def render_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, rule, *body])


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
