"""`compare` (and its plot), `sql`: reading the store."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from agents.errors import ReviewbusError
from agents.settings import Settings
from infra.config_file import load_config

from ..services import reports
from ..services.common import parse_window, store_for
from .render import add_format, emit


def register(cmd) -> None:
    sp = cmd("compare", cmd_compare, "compare versions from ClickHouse")
    sp.add_argument("versions", nargs="*")
    sp.add_argument("--window", default="24h")
    sp.add_argument("--run", dest="run_id")
    add_format(sp)
    sp.add_argument("--plot", type=Path, metavar="FILE.png",
                    help="also draw each version over time, state changes marked")

    sp = cmd("sql", cmd_sql, "read-only SQL on the store")
    sp.add_argument("query")
    add_format(sp)


def cmd_compare(args, settings: Settings) -> int:
    task = load_config(settings.config).task
    window_s = parse_window(args.window)
    with store_for(settings) as store:
        rows = reports.compare(store, task, window_s, args.run_id, args.versions)
        if args.plot:
            plot_rollout(store, task, window_s, args.plot, args.versions)
            print(f"plot written to {args.plot}", file=sys.stderr)
    emit(rows, args.format, reports.COMPARE_COLUMNS)
    return 0


def cmd_sql(args, settings: Settings) -> int:
    with store_for(settings) as store:
        rows, columns = reports.sql(store, args.query)
    emit(rows, args.format, columns)
    return 0


# ---- `compare --plot FILE.png` -----------------------------------------------------------------
# Four panels sharing the time axis: latency p95, error rate, change-type accuracy (labelled
# traffic) and agreement with the stable version; a vertical line where a version changed state
# (promotion, canary step, rollback, quarantine), labelled with the new state. matplotlib with
# the Agg backend: no display needed.

PANELS = (("p95_ms", "latency p95 (ms)"), ("error_rate", "error rate"),
          ("accuracy", "accuracy (labelled)"), ("agreement", "agreement with stable"))


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
    from matplotlib.lines import Line2D

    data = reports.collect(store, task, window_s, versions)
    if not data["series"]:
        raise ReviewbusError("nothing to plot: no interactions in the window")
    fig, axes = plt.subplots(len(PANELS), 1, sharex=True, figsize=(11, 9))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {v: palette[i % len(palette)] for i, v in enumerate(sorted(data["series"]))}
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
    for change in data["changes"]:
        axes[0].annotate(f"{change['version_id']}: {change['state']}", xy=(change["at"], 1.0),
                         xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                         va="top", ha="right", color=colors.get(change["version_id"], "grey"))
    # Every version, also one with nothing in the top panel (say, only failures); above the
    # panels, not inside one, where it hid the points it sat on.
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
