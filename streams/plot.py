"""`reviewbus compare --plot FILE.png`: each version over time, with its state changes marked.

Four panels sharing the time axis: latency p95, error rate, change-type accuracy (labelled
traffic) and agreement with the stable version; a vertical line where a version changed state
(promotion, canary step, rollback, quarantine), labelled with the new state. matplotlib with
the Agg backend: no display needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from agents.errors import ReviewbusError
from agents.registry import IN_PLACE
from agents.rotation import quote
from schemas import LifecycleAction

# Events that change no state (and registrations) are not marked.
IN_PLACE_SQL = ", ".join(quote(a) for a in sorted(a.value for a in (*IN_PLACE, LifecycleAction.register)))
PANELS = (("p95_ms", "latency p95 (ms)"), ("error_rate", "error rate"),
          ("accuracy", "accuracy (labelled)"), ("agreement", "agreement with stable"))


def bucket_seconds(span_s: float, buckets: int = 40) -> int:
    """Bucket width so that the traffic's actual time span holds about `buckets` points."""
    return max(1, int(math.ceil(span_s / buckets)))


def span_sql(task: str, window_s: int) -> str:
    return f"""SELECT min(occurred_at) AS first, max(occurred_at) AS last, count() AS n
FROM interactions FINAL
WHERE task = {quote(task)} AND run_id = ''
  AND occurred_at >= now64(3) - INTERVAL {int(window_s)} SECOND"""


def series_sql(task: str, window_s: int, bucket_s: int) -> str:
    return f"""SELECT version_id, toStartOfInterval(occurred_at, INTERVAL {bucket_s} SECOND) AS t,
       count() AS n, countIf(status != 'ok') / count() AS error_rate,
       quantileExactInclusiveIf(0.95)(latency_ms, status = 'ok') AS p95_ms,
       if(countIf(label IS NOT NULL AND status = 'ok') = 0, NULL,
          countIf(label IS NOT NULL AND status = 'ok' AND predicted_label = label)
          / countIf(label IS NOT NULL AND status = 'ok')) AS accuracy
FROM interactions FINAL
WHERE task = {quote(task)} AND run_id = ''
  AND occurred_at >= now64(3) - INTERVAL {int(window_s)} SECOND
GROUP BY version_id, t ORDER BY version_id, t"""


def agreement_series_sql(task: str, window_s: int, bucket_s: int) -> str:
    return f"""SELECT candidate_version AS version_id,
       toStartOfInterval(occurred_at, INTERVAL {bucket_s} SECOND) AS t,
       avg(toFloat64(change_type_agree)) AS agreement
FROM shadow_comparisons FINAL
WHERE task = {quote(task)} AND change_type_agree IS NOT NULL
  AND occurred_at >= now64(3) - INTERVAL {int(window_s)} SECOND
GROUP BY version_id, t ORDER BY version_id, t"""


def changes_sql(task: str, window_s: int) -> str:
    return f"""SELECT occurred_at, version_id, action, to_state, traffic_percent
FROM lifecycle FINAL
WHERE task = {quote(task)} AND action NOT IN ({IN_PLACE_SQL})
  AND occurred_at >= now64(3) - INTERVAL {int(window_s)} SECOND
ORDER BY occurred_at LIMIT 1 BY event_id"""


def _time(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def collect(store, task: str, window_s: int, versions: Sequence[str] = ()) -> dict:
    """The numbers the plot draws: {series: {version: {metric: [(t, value)]}}, changes: [...]}."""
    span = store.query(span_sql(task, window_s)).as_dicts()
    if not span or not span[0].get("n"):
        return {"bucket_s": 0, "series": {}, "changes": []}
    bucket_s = bucket_seconds((_time(span[0]["last"]) - _time(span[0]["first"])).total_seconds())
    series: dict[str, dict[str, list]] = {}
    for row in store.query(series_sql(task, window_s, bucket_s)).as_dicts():
        if versions and row["version_id"] not in versions:
            continue
        per = series.setdefault(row["version_id"], {m: [] for m, _ in PANELS})
        for metric in ("p95_ms", "error_rate", "accuracy"):
            if row.get(metric) is not None:
                per[metric].append((_time(row["t"]), float(row[metric])))
    for row in store.query(agreement_series_sql(task, window_s, bucket_s)).as_dicts():
        if versions and row["version_id"] not in versions:
            continue
        per = series.setdefault(row["version_id"], {m: [] for m, _ in PANELS})
        if row.get("agreement") is not None:
            per["agreement"].append((_time(row["t"]), float(row["agreement"])))
    changes = [
        {"at": _time(r["occurred_at"]), "version_id": r["version_id"], "action": r["action"],
         "state": r["to_state"] + (f" {r['traffic_percent']:g}%" if r["to_state"] == "canary"
                                   else "")}
        for r in store.query(changes_sql(task, window_s)).as_dicts()
        if not versions or r["version_id"] in versions
    ]
    return {"bucket_s": bucket_s, "series": series, "changes": changes}


def with_gaps(points: Sequence[tuple[datetime, float]], bucket_s: int
              ) -> tuple[list[datetime], list[float]]:
    """xs, ys with a NaN wherever buckets without traffic lie between two points, so the line
    breaks there instead of drawing numbers nobody measured."""
    xs: list[datetime] = []
    ys: list[float] = []
    for t, y in points:
        if xs and (t - xs[-1]).total_seconds() > bucket_s:
            xs.append(xs[-1])
            ys.append(math.nan)
        xs.append(t)
        ys.append(y)
    return xs, ys


def plot_rollout(store, task: str, window_s: int, path: Path,
                 versions: Sequence[str] = ()) -> dict:
    """Write the PNG; return the numbers drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = collect(store, task, window_s, versions)
    if not data["series"]:
        raise ReviewbusError("nothing to plot: no interactions in the window")
    fig, axes = plt.subplots(len(PANELS), 1, sharex=True, figsize=(11, 9))
    colors: dict[str, str] = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, version in enumerate(sorted(data["series"])):
        colors[version] = palette[i % len(palette)]
    for ax, (metric, title) in zip(axes, PANELS):
        for version, per in sorted(data["series"].items()):
            if per[metric]:
                xs, ys = with_gaps(per[metric], data["bucket_s"])
                ax.plot(xs, ys, marker=".", color=colors[version])
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        for change in data["changes"]:
            ax.axvline(change["at"], color=colors.get(change["version_id"], "grey"),
                       linestyle="--", alpha=0.6)
    top = axes[0]
    for change in data["changes"]:
        top.annotate(f"{change['version_id']}: {change['state']}", xy=(change["at"], 1.0),
                     xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                     va="top", ha="right", color=colors.get(change["version_id"], "grey"))
    # Every version, also one with nothing in the top panel (say, only failures); above the
    # panels, not inside one, where it hid the points it sat on.
    from matplotlib.lines import Line2D

    fig.legend(handles=[Line2D([], [], color=c, marker=".", label=v) for v, c in colors.items()],
               loc="upper center", bbox_to_anchor=(0.5, 0.96), ncol=min(len(colors), 6),
               fontsize=8, frameon=False)
    axes[-1].set_xlabel(f"time (UTC), {data['bucket_s']} s buckets")
    fig.suptitle(f"reviewbus rollout: {task}")
    fig.autofmt_xdate()
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise ReviewbusError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        plt.close(fig)
    return data
