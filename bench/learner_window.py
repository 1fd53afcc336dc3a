"""Does a learner refit slow down as the labelled history grows? (issue 22, long running)

`python -m bench.learner_window [--copies 1,2,4,8] [--data PATH]`: for each size, a fresh chDB
store holds `copies` times the dataset's commits as archived, labelled requests (each copy
with new shas, later arrival times), and one refit of a repository is timed the way the
learner agent runs it (streams/flows/learner.py: the two archive reads, the export rows, the
examples, the global base, the repository's own model, the holdout card), once reading the
whole history (`max_labels_per_repo: 0, base_labels_per_repo: 0`: what it did before) and once
with the default windows. Process CPU seconds and wall seconds per phase, and the rows each
fit saw; JSON in bench/results/learner-window-<stamp>.json and a PNG of seconds by history.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from .core import gc_like_the_worker

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "commits-train.jsonl.gz"
TASK = "code-review"


def archived(rows: list[dict], copies: int) -> list:
    """The dataset's commits as AcceptedChanges, `copies` times (new shas, later arrivals)."""
    from agents.intake import accept_input
    from agents.learning.data import commit_event
    from agents.settings import Limits

    limits = Limits()
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    n = 0
    for c in range(copies):
        for row in reversed(rows):  # the dataset is newest first within each repository
            commit = commit_event({**row, "sha": f"{c:04x}{row['sha'][4:]}"})
            change = accept_input(commit.model_dump_json().encode(), source_topic="commits",
                                  kind="commit", task=TASK, limits=limits,
                                  accepted_at=t0 + timedelta(seconds=n))
            out.append(change.model_copy(update={"request_id": f"c{c}-{row['sha']}"}))
            n += 1
    return out


class _Store:
    def __init__(self, store):
        self.store = store

    async def query(self, sql, params=None):
        return self.store.query(sql, params)


def one_refit(store, repo: str, labels: int, window: bool, max_labels: int = 2000,
              base_labels: int = 1000, takeover: int = 100) -> dict:
    """The learner agent's refit of `repo` (its reads and fits), timed by phase."""
    from agents.learning import live
    from agents.learning.export import training_rows
    from infra import queries
    from streams.flows import learner

    cfg = live.LearnerAgentConfig(enabled=True, refit_every=1, takeover=takeover,
                                  max_labels_per_repo=max_labels if window else 0,
                                  base_labels_per_repo=base_labels if window else 0)
    ctx = SimpleNamespace(store=_Store(store))
    t = {"wall": time.perf_counter(), "cpu": time.process_time()}
    own = asyncio.run(learner._rows(ctx, queries.training_archive(
        TASK, newest=cfg.max_labels_per_repo, repos=[repo])))
    others = asyncio.run(learner._rows(ctx, queries.training_archive(
        TASK, newest=cfg.base_labels_per_repo, exclude=[repo])))
    feedback = asyncio.run(learner._rows(ctx, queries.change_type_feedback()))
    rows = training_rows(sorted(own + others, key=lambda r: (r["repo"], r["occurred_at"],
                                                               r["request_id"])), feedback)
    read = {"wall": time.perf_counter(), "cpu": time.process_time()}
    due = [live.Due(repo, labels, 0, None)]
    with tempfile.TemporaryDirectory() as home:
        import os

        os.environ["REVIEWBUS_HOME"] = home
        ((_d, card),) = learner._refit_all(rows, due, cfg, {})
    done = {"wall": time.perf_counter(), "cpu": time.process_time()}
    return {
        "window": window, "rows_read": len(own) + len(others),
        "fitted_labels": card["data"]["fitted_labels"], "labels": card["data"]["labels"],
        "global_rows": card["data"]["global_rows"],
        "read_s": round(read["wall"] - t["wall"], 3), "read_cpu_s": round(read["cpu"] - t["cpu"], 3),
        "fit_s": round(done["wall"] - read["wall"], 3), "fit_cpu_s": round(done["cpu"] - read["cpu"], 3),
        "total_s": round(done["wall"] - t["wall"], 3),
        "holdout": card["metrics"].get("holdout"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learner_window", description=__doc__)
    p.add_argument("--copies", default="1,2,4,8")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--repo", default="python-semantic-release/python-semantic-release")
    p.add_argument("--max-labels", type=int, default=2000, help="max_labels_per_repo")
    p.add_argument("--base-labels", type=int, default=1000, help="base_labels_per_repo")
    p.add_argument("--takeover", type=int, default=100, help="labels for an own model")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    gc_like_the_worker()
    from infra.store import Store

    with gzip.open(args.data, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    per_repo = sum(1 for r in rows if r["repo"] == args.repo)
    runs = []
    for copies in (int(c) for c in args.copies.split(",")):
        events = archived(rows, copies)
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.connect(f"chdb://{tmp}/ch")
            try:
                store.migrate()
                for i in range(0, len(events), 2000):
                    store.insert_events(events[i:i + 2000])
                for window in (False, True):
                    got = one_refit(store, args.repo, per_repo * copies, window,
                                    args.max_labels, args.base_labels, args.takeover)
                    got.update(copies=copies, history=len(events))
                    runs.append(got)
                    print(f"history {len(events):>6} ({copies}x) window={window!s:5} "
                          f"read {got['rows_read']:>6} rows {got['read_s']:6.2f} s, fit "
                          f"{got['fit_s']:6.2f} s (base on {got['global_rows']}, own on "
                          f"{got['fitted_labels']})", flush=True)
            finally:
                store.close()
    results = args.out
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"learner-window-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"runs": runs, "repo": args.repo, "max_labels": args.max_labels,
                                "base_labels": args.base_labels}, indent=1, sort_keys=True))
    _plot(runs, path.with_suffix(".png"))
    print(path)
    return 0


def _plot(runs: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for window, label in ((False, "whole history (before)"), (True, "windows (default)")):
        pts = [(r["history"], r["total_s"]) for r in runs if r["window"] is window]
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=label)
    ax.set_xlabel("labelled commits in the archive")
    ax.set_ylabel("one refit, s (reads + fits)")
    ax.set_title("Learner refit time as the history grows")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
