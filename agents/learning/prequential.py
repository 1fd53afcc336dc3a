"""The prequential (test-then-train) protocol: how a learner that refits on every N new labels
would have scored, had it run live on each repository's history.

Per repository, commits in author-date order: the first `warmup` commits are predicted by a
global base fitted on the OTHER repositories alone; then every `refit_every` commits the
repository's own model is refit on all of its earlier commits (plus, as the strategy decides,
the base), and predicts the next block. Every commit is predicted exactly once, by a model that
saw no commit of its project authored at or after it. The report scores every predictor the
strategy names (`learner`, the one that would serve, and e.g. `global`, `local`) on the same
commits, and the learning curve: accuracy per block by the number of the project's labels the
model had seen.

`loro` is the static leave-one-repository-out protocol with the same strategy: the base fitted
on the other repositories predicts every commit of this one.

Pure functions over row indices: a strategy holds the features and fits its own models; no I/O.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .metrics import classification_report, mean_report

PRIMARY = "learner"


class Strategy(Protocol):
    """A model family under the protocol. Rows are indices into the strategy's own table."""

    def fit_base(self, rows: Sequence[int]) -> Any:
        """The global base from the other repositories' rows."""
        ...

    def fit_local(self, base: Any, rows: Sequence[int]) -> Any:
        """The repository's own model from its earlier rows (oldest first)."""
        ...

    def predict(self, base: Any, local: Any | None, seen: int,
                rows: Sequence[int]) -> Mapping[str, Sequence[str]]:
        """Labels of `rows` per predictor name; PRIMARY ("learner") is required. `local` is
        None before the warmup ends (then `seen` is 0)."""
        ...


def blocks(n: int, warmup: int, refit_every: int) -> list[tuple[int, int]]:
    """(seen, end) per block: commits [seen, end) are predicted by a model that saw the first
    `seen` commits of the project (0: the base alone)."""
    if warmup < 0 or refit_every < 1:
        raise ValueError(f"warmup must be >= 0 and refit_every >= 1, got {warmup}, {refit_every}")
    out: list[tuple[int, int]] = []
    if warmup > 0 and n > 0:
        out.append((0, min(warmup, n)))
    seen = warmup
    while seen < n:
        out.append((seen, min(seen + refit_every, n)))
        seen += refit_every
    return out


def _score(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    return classification_report(list(truth), list(predicted))


def run_repo(strategy: Strategy, base: Any, order: Sequence[int], labels: Sequence[str],
             warmup: int = 100, refit_every: int = 50) -> dict[str, Any]:
    """One repository: `order` is its rows oldest first."""
    predicted: dict[str, list[str]] = {}
    answered: dict[str, list[str]] = {}  # the truth of the rows each predictor answered
    curve: list[dict[str, Any]] = []
    refit_s: list[float] = []
    refit_cpu: list[float] = []  # CPU seconds of this process: wall time on a busy host misleads
    local = None
    for seen, end in blocks(len(order), warmup, refit_every):
        if seen > 0:
            t0, c0 = time.perf_counter(), time.process_time()
            local = strategy.fit_local(base, order[:seen])
            refit_s.append(time.perf_counter() - t0)
            refit_cpu.append(time.process_time() - c0)
        rows = order[seen:end]
        answers = strategy.predict(base, local if seen > 0 else None, seen, rows)
        if PRIMARY not in answers:
            raise ValueError(f"the strategy's predictions lack {PRIMARY!r}")
        truth = [labels[i] for i in rows]
        point: dict[str, Any] = {"labels": seen, "n": len(rows)}
        for name, got in answers.items():
            got = list(got)
            if len(got) != len(rows):
                raise ValueError(f"predictor {name!r} answered {len(got)} of {len(rows)} rows")
            predicted.setdefault(name, []).extend(got)
            answered.setdefault(name, []).extend(truth)
            point[name] = round(sum(t == p for t, p in zip(truth, got)) / len(rows), 4)
        curve.append(point)
    truth = [labels[i] for i in order]
    report = _score(truth, predicted[PRIMARY])
    # a predictor that answers only after the warmup (`local`) is scored on those rows
    report["predictors"] = {name: {k: v for k, v in _score(answered[name], got).items()
                                   if k in ("accuracy", "macro_f1", "n")}
                            for name, got in sorted(predicted.items())}
    report["curve"] = curve
    report["refits"] = len(refit_s)
    report["refit_seconds_mean"] = round(statistics.mean(refit_s), 3) if refit_s else 0.0
    report["refit_seconds_max"] = round(max(refit_s), 3) if refit_s else 0.0
    report["refit_cpu_seconds_mean"] = round(statistics.mean(refit_cpu), 3) if refit_cpu else 0.0
    return report


def mean_curve(per_repo: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each predictor's accuracy by labels seen, averaged over the repositories that reached
    that many labels (`repos`)."""
    by_seen: dict[int, list[Mapping[str, Any]]] = {}
    for report in per_repo.values():
        for point in report["curve"]:
            by_seen.setdefault(point["labels"], []).append(point)
    out = []
    for seen in sorted(by_seen):
        points = by_seen[seen]
        names = sorted({k for p in points for k in p if k not in ("labels", "n")})
        row: dict[str, Any] = {"labels": seen, "repos": len(points)}
        for name in names:
            vals = [p[name] for p in points if name in p]
            row[name] = round(statistics.mean(vals), 4)
        out.append(row)
    return out


def takeover(curve: Sequence[Mapping[str, Any]], challenger: str = "local",
             incumbent: str = "global", run: int = 3, min_repos: int = 2) -> int | None:
    """The fewest labels from which `challenger` is at least as accurate as `incumbent` in
    `run` consecutive blocks of the mean curve (blocks that at least `min_repos` repositories
    reached); None when it never is."""
    points = [p for p in curve if p["labels"] > 0 and p.get("repos", min_repos) >= min_repos
              and challenger in p and incumbent in p]
    for i, point in enumerate(points):
        window = points[i:i + run]
        if len(window) == run and all(p[challenger] >= p[incumbent] for p in window):
            return int(point["labels"])
    return None


def prequential(strategy: Strategy, repos: Mapping[str, Sequence[int]], labels: Sequence[str],
                warmup: int = 100, refit_every: int = 50,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """`repos`: repository -> its rows oldest first. Top-level `accuracy` / `macro_f1` are the
    means over repositories of the learner's; `predictors` the means of every predictor's;
    `curve` the mean learning curve; `takeover` the labels from which the own model beats the
    global one (when the strategy reports both as `local` and `global`)."""
    if not repos:
        raise ValueError("no repositories")
    per_repo: dict[str, dict[str, Any]] = {}
    for repo in sorted(repos):
        others = [i for r in sorted(repos) if r != repo for i in repos[r]]
        t0 = time.perf_counter()
        base = strategy.fit_base(others)
        base_s = time.perf_counter() - t0
        report = run_repo(strategy, base, repos[repo], labels, warmup, refit_every)
        report["base_rows"] = len(others)
        report["base_fit_seconds"] = round(base_s, 3)
        per_repo[repo] = report
        if log:
            shown = ", ".join(f"{k} {v['accuracy']:.3f}/{v['macro_f1']:.3f}"
                              for k, v in report["predictors"].items())
            log(f"  {repo}: {shown}; refit {report['refit_seconds_mean']:.2f} s")
    out = mean_report(per_repo)
    for key in ("p50_ms", "p95_ms", "throughput_per_s"):
        out.pop(key, None)
    names = sorted({n for r in per_repo.values() for n in r["predictors"]})
    out["predictors"] = {
        n: {k: round(statistics.mean(r["predictors"][n][k] for r in per_repo.values()
                                     if n in r["predictors"]), 4) for k in ("accuracy", "macro_f1")}
        for n in names}
    out["curve"] = mean_curve(per_repo)
    out["takeover"] = takeover(out["curve"])
    for key in ("refit_seconds_mean", "refit_cpu_seconds_mean"):
        out[key] = round(statistics.mean(r[key] for r in per_repo.values()), 3)
    out.update(protocol="prequential", warmup=warmup, refit_every=refit_every, per_repo=per_repo)
    return out


def loro(strategy: Strategy, repos: Mapping[str, Sequence[int]], labels: Sequence[str],
         log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Leave one repository out: the base fitted on the others predicts all of this one."""
    if len(repos) < 2:
        raise ValueError("leave-one-repository-out needs at least two repositories")
    per_repo: dict[str, dict[str, Any]] = {}
    for repo in sorted(repos):
        others = [i for r in sorted(repos) if r != repo for i in repos[r]]
        base = strategy.fit_base(others)
        rows = list(repos[repo])
        got = strategy.predict(base, None, 0, rows)[PRIMARY]
        per_repo[repo] = _score([labels[i] for i in rows], got)
        if log:
            log(f"  {repo}: {per_repo[repo]['accuracy']:.3f}/{per_repo[repo]['macro_f1']:.3f}")
    out = mean_report(per_repo)
    for key in ("p50_ms", "p95_ms", "throughput_per_s"):
        out.pop(key, None)
    out.update(protocol="loro", per_repo=per_repo)
    return out
