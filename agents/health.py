"""Health tracking: decide when a version's failures warrant quarantine, and when it may leave.

Pure. The five triggers of the design, each configurable (`quarantine:` in the versions file):

- `error_rate`: more than `max_error_rate` of the last `window` outcomes failed (once the window
  holds `min_samples`); `consecutive_failures` in a row trip it early.
- `latency_slo`: the `latency_quantile` of the last `window` successful latencies is above the
  version's latency objective (`latency_ms`), once `latency_min_samples` are in.
- `invalid_output`: `invalid_outputs` answers in the window were not in the output schema.
- `accuracy_regression`: on labelled traffic, the candidate's change-type accuracy is, with
  confidence, more than `accuracy_max_drop` below the stable version's (Wilson upper bound of
  the candidate below the stable accuracy minus the allowed drop). Never for the stable itself.
- `crash_loop`: the worker died `crash_loop_restarts` times within `crash_loop_window_s` while
  this version alone had a batch in flight (see `crash_verdicts`).

(The sixth, `error_budget`, an exhausted SLO error budget of a candidate, lives in agents/slo.py.)

HealthTracker.observe records one outcome and returns (trigger, evidence) the first time a
threshold is crossed; after that it stays silent for that version until reset().
root_cause() makes the one-line explanation a QuarantineEvent carries; retest_verdict() judges
the half-open re-test that lets a quarantined version go back to shadow. crash_verdicts() and
suspects_of() judge the crash history; the marker files that record it (CrashGuard,
collect_deaths) are I/O and live in infra/crash_markers.py.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from .stats import quantile, wilson_interval

TRIGGERS = ("consecutive_failures", "error_rate", "invalid_output", "latency_slo",
            "accuracy_regression", "crash_loop", "error_budget")
ERROR_SAMPLE = 20  # recent error messages kept per version, for the root cause


@dataclass(frozen=True)
class Outcome:
    """One result of one version, as health sees it."""

    ok: bool
    status: str = "ok"  # ok | error | timeout | invalid_output
    latency_ms: float = 0.0
    correct: bool | None = None  # labelled traffic: did the change type match the label?
    error: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, status: str, latency_ms: float = 0.0, *, label: str | None = None,
           predicted: str | None = None, error: str | None = None,
           request_id: str | None = None) -> Outcome:
        ok = status == "ok"
        correct = (predicted == label) if ok and label is not None else None
        return cls(ok=ok, status=status, latency_ms=float(latency_ms), correct=correct,
                   error=error, request_id=request_id)


@dataclass
class _VersionHealth:
    window: deque[Outcome]
    accuracy: deque[bool]
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=ERROR_SAMPLE))
    consecutive: int = 0
    observed: int = 0
    failed: int = 0
    tripped: bool = False
    trigger: str | None = None


class HealthTracker:
    def __init__(
        self,
        consecutive_failures: int = 5,
        window: int = 50,
        max_error_rate: float = 0.5,
        min_samples: int = 20,
        *,
        invalid_outputs: int = 5,
        latency_ms: float | None = None,
        latency_quantile: float = 0.95,
        latency_min_samples: int = 20,
        latency_overrides: Mapping[str, float] | None = None,
        accuracy_window: int = 200,
        accuracy_min_samples: int = 30,
        accuracy_max_drop: float = 0.2,
        accuracy_confidence: float = 0.95,
        triggers: Iterable[str] = TRIGGERS,
    ) -> None:
        if consecutive_failures < 1 or window < 1 or min_samples < 1:
            raise ValueError("consecutive_failures, window and min_samples must be >= 1")
        if not 0.0 <= max_error_rate <= 1.0:
            raise ValueError("max_error_rate must be in [0, 1]")
        if invalid_outputs < 1 or latency_min_samples < 1 or accuracy_min_samples < 1:
            raise ValueError("invalid_outputs and the min_samples settings must be >= 1")
        if not 0.0 < latency_quantile < 1.0 or not 0.0 <= accuracy_max_drop <= 1.0:
            raise ValueError("latency_quantile must be in (0, 1), accuracy_max_drop in [0, 1]")
        unknown = set(triggers) - set(TRIGGERS)
        if unknown:
            raise ValueError(f"unknown triggers {sorted(unknown)}; known: {list(TRIGGERS)}")
        self.consecutive_failures = consecutive_failures
        self.window = window
        self.max_error_rate = max_error_rate
        self.min_samples = min(min_samples, window)  # a window never holds more than `window`
        self.invalid_outputs = invalid_outputs
        self.latency_ms = latency_ms
        self.latency_quantile = latency_quantile
        self.latency_min_samples = min(latency_min_samples, window)
        self.latency_overrides = dict(latency_overrides or {})
        self.accuracy_window = accuracy_window
        self.accuracy_min_samples = min(accuracy_min_samples, accuracy_window)
        self.accuracy_max_drop = accuracy_max_drop
        self.accuracy_confidence = accuracy_confidence
        self.triggers = frozenset(triggers)
        self._versions: dict[str, _VersionHealth] = {}
        # (version, repository) -> its accuracy there: the baseline of candidates scoped to
        # repositories, kept for the repositories a scoped version names only
        self._by_repo: dict[tuple[str, str], deque[bool]] = {}

    def _get(self, version_id: str) -> _VersionHealth:
        h = self._versions.get(version_id)
        if h is None:
            h = _VersionHealth(window=deque(maxlen=self.window),
                               accuracy=deque(maxlen=self.accuracy_window))
            self._versions[version_id] = h
        return h

    def latency_objective(self, version_id: str) -> float | None:
        return self.latency_overrides.get(version_id, self.latency_ms)

    def observe(self, version_id: str, outcome: Outcome | bool, *, stable: str | None = None,
                scope: AbstractSet[str] = frozenset(), repo: str | None = None,
                repo_baselines: AbstractSet[str] = frozenset()
                ) -> tuple[str, dict[str, Any]] | None:
        """Record one outcome; (trigger, evidence) the first time a threshold is crossed.

        `stable` names the stable version, for the accuracy comparison (candidates only).
        `scope`: the repositories the version is scoped to (`spec.repos`); its accuracy is then
        compared with the stable version's on those repositories only. `repo`: the outcome's
        repository, remembered apart when it is one of `repo_baselines` (the repositories some
        scoped version names).
        """
        if isinstance(outcome, bool):
            outcome = Outcome(ok=outcome, status="ok" if outcome else "error")
        h = self._get(version_id)
        h.observed += 1
        h.window.append(outcome)
        if outcome.correct is not None:
            h.accuracy.append(outcome.correct)
            if repo is not None and repo in repo_baselines:
                self._by_repo.setdefault((version_id, repo), deque(
                    maxlen=self.accuracy_window)).append(outcome.correct)
        if outcome.ok:
            h.consecutive = 0
        else:
            h.failed += 1
            h.consecutive += 1
            lines = (outcome.error or outcome.status or "error").strip().splitlines()
            h.errors.append(lines[0][:200] if lines else outcome.status)
        if h.tripped:
            return None
        found = self._check(version_id, h, stable, scope)
        if found is None:
            return None
        trigger, details = found
        h.tripped, h.trigger = True, trigger
        return trigger, {**self._evidence(version_id, h), "trigger": trigger, **details}

    def _baseline(self, stable: str, scope: AbstractSet[str]) -> list[bool]:
        """The stable version's recent accuracy: on the repositories of `scope` only when
        given (a scoped candidate sees those alone), else on all it answered."""
        if not scope:
            base = self._versions.get(stable)
            return list(base.accuracy) if base is not None else []
        return [hit for r in sorted(scope) for hit in self._by_repo.get((stable, r), ())]

    def _check(self, version_id: str, h: _VersionHealth, stable: str | None,
               scope: AbstractSet[str] = frozenset()) -> tuple[str, dict[str, Any]] | None:
        on = self.triggers
        size = len(h.window)
        errors = sum(1 for o in h.window if not o.ok)
        invalid = sum(1 for o in h.window if o.status == "invalid_output")
        if "invalid_output" in on and invalid >= self.invalid_outputs:
            return "invalid_output", {"invalid_outputs": invalid,
                                      "invalid_outputs_threshold": self.invalid_outputs}
        if "consecutive_failures" in on and h.consecutive >= self.consecutive_failures:
            return "consecutive_failures", {}
        if "error_rate" in on and size >= self.min_samples and errors / size > self.max_error_rate:
            return "error_rate", {}
        objective = self.latency_objective(version_id)
        if "latency_slo" in on and objective is not None:
            latencies = [o.latency_ms for o in h.window if o.ok]
            if len(latencies) >= self.latency_min_samples:
                q = quantile(latencies, self.latency_quantile)
                if q is not None and q > objective:
                    return "latency_slo", {
                        "latency_quantile": self.latency_quantile, "latency_ms": round(q, 3),
                        "latency_objective_ms": objective, "latency_samples": len(latencies)}
        if ("accuracy_regression" in on and stable is not None and stable != version_id
                and len(h.accuracy) >= self.accuracy_min_samples):
            base = self._baseline(stable, scope)
            if len(base) >= self.accuracy_min_samples:
                hits, n = sum(h.accuracy), len(h.accuracy)
                base_hits, base_n = sum(base), len(base)
                lo, hi = wilson_interval(hits, n, self.accuracy_confidence)
                stable_acc = base_hits / base_n
                if hi < stable_acc - self.accuracy_max_drop:
                    return "accuracy_regression", {
                        "accuracy": hits / n, "accuracy_interval": [lo, hi], "labelled": n,
                        "stable_version": stable, "stable_accuracy": stable_acc,
                        "stable_labelled": base_n, "accuracy_max_drop": self.accuracy_max_drop,
                        "confidence": self.accuracy_confidence,
                        **({"stable_repos": sorted(scope)} if scope else {})}
        return None

    def _evidence(self, version_id: str, h: _VersionHealth) -> dict[str, Any]:
        size = len(h.window)
        errors = sum(1 for o in h.window if not o.ok)
        statuses = Counter(o.status for o in h.window)
        return {
            "version_id": version_id,
            "consecutive_failures": h.consecutive,
            "consecutive_threshold": self.consecutive_failures,
            "window_size": size,
            "window_errors": errors,
            "error_rate": errors / size if size else 0.0,
            "max_error_rate": self.max_error_rate,
            "min_samples": self.min_samples,
            "statuses": dict(sorted(statuses.items())),
            "observed": h.observed,
            "failed": h.failed,
            "top_errors": [[text, n] for text, n in Counter(h.errors).most_common(3)],
            "sample_request_ids": [o.request_id for o in h.window
                                   if not o.ok and o.request_id][-5:],
        }

    def tripped(self, version_id: str) -> bool:
        h = self._versions.get(version_id)
        return bool(h and h.tripped)

    def reset(self, version_id: str) -> None:
        """Forget a version's history (after restore), so it can trigger again."""
        self._versions.pop(version_id, None)
        for key in [k for k in self._by_repo if k[0] == version_id]:
            del self._by_repo[key]


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def root_cause(trigger: str, evidence: Mapping[str, Any]) -> str:
    """One line: what crossed which threshold, and the most common error behind it."""
    e = evidence
    if trigger == "consecutive_failures":
        text = f"{e.get('consecutive_failures')} consecutive failures"
    elif trigger == "error_rate":
        text = (f"{e.get('window_errors')} of the last {e.get('window_size')} requests failed "
                f"({_pct(e.get('error_rate', 0))} > {_pct(e.get('max_error_rate', 0))})")
    elif trigger == "invalid_output":
        text = (f"{e.get('invalid_outputs')} answers outside the output schema in the last "
                f"{e.get('window_size')} requests")
    elif trigger == "latency_slo":
        text = (f"p{100 * e.get('latency_quantile', 0.95):g} latency {e.get('latency_ms'):.0f} ms "
                f"over the {e.get('latency_objective_ms'):g} ms objective "
                f"({e.get('latency_samples')} requests)")
    elif trigger == "accuracy_regression":
        text = (f"change-type accuracy {_pct(e.get('accuracy', 0))} on {e.get('labelled')} "
                f"labelled requests vs {_pct(e.get('stable_accuracy', 0))} for stable "
                f"{e.get('stable_version')} (allowed drop {_pct(e.get('accuracy_max_drop', 0))})")
    elif trigger == "crash_loop":
        text = (f"the worker died {e.get('crashes')} times in {e.get('window_s'):g} s while this "
                f"version alone had a batch in flight")
    elif trigger == "error_budget":
        text = f"SLO error budget exhausted ({', '.join(e.get('exhausted', [])) or '?'})"
    else:
        text = trigger
    top = e.get("top_errors") or []
    if top and trigger not in ("latency_slo", "accuracy_regression"):
        text += f"; most common error: {top[0][0]}"
    return f"{trigger}: {' '.join(text.split())}"[:300]


# ---- crash loops ---------------------------------------------------------------------------


def crash_verdicts(history: Sequence[Mapping[str, Any]], now: float, *, restarts: int,
                   window_s: float, poison_after: int = 2
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, set[str]]]:
    """From the crash history, the crash-looping versions and the poison requests.

    Each history entry is one worker death: {"at": epoch seconds, "inflight": {version id:
    [request ids]}}. A crash counts against a version only when that version alone had a batch
    in flight (the worker runs the batches of suspects alone, so the next death is
    attributable). A version with `restarts` such crashes within `window_s` is crash-looping.
    A request of a version that was in flight in `poison_after` deaths is poison for that
    version: it is dead-lettered instead of being run again.

    Returns ({version: evidence}, {version: poison request ids}).
    """
    recent = [h for h in history if now - float(h.get("at", 0)) <= window_s]
    sole: Counter[str] = Counter()
    seen: Counter[tuple[str, str]] = Counter()
    for h in recent:
        inflight = h.get("inflight") or {}
        if len(inflight) == 1:
            sole[next(iter(inflight))] += 1
        for version, ids in inflight.items():
            for rid in set(ids):
                seen[(version, rid)] += 1
    looping = {
        v: {"crashes": n, "window_s": window_s, "crash_loop_restarts": restarts,
            "deaths_in_window": len(recent),
            "last_requests": list((recent[-1].get("inflight") or {}).get(v, []))[:5]
            if recent else []}
        for v, n in sole.items() if n >= restarts
    }
    poison: dict[str, set[str]] = {}
    for (version, rid), n in seen.items():
        if n >= poison_after:
            poison.setdefault(version, set()).add(rid)
    return looping, poison


def suspects_of(history: Sequence[Mapping[str, Any]]) -> set[str]:
    """The versions in flight at the last death: their batches run alone until one passes."""
    if not history:
        return set()
    return set((history[-1].get("inflight") or {}))


# ---- leaving quarantine ----------------------------------------------------------------------


def retest_verdict(rows: Sequence[Mapping[str, Any]], sent: int, *, min_success_rate: float,
                   latency_ms: float | None = None, stable_accuracy: float | None = None,
                   max_accuracy_drop: float = 0.2) -> dict[str, Any]:
    """Judge a half-open re-test: `rows` are the replayed results (status, latency_ms, and
    label / predicted_label where the archived request had a label).

    Passes when every replayed request answered, at least `min_success_rate` of them ok,
    (with a latency objective) the median ok latency within it, and (with the stable
    version's accuracy on the same requests) the change-type accuracy on the labelled ones
    no more than `max_accuracy_drop` below it. Missing answers count as failures, so a
    version that hangs never passes.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    answered = len(rows)
    rate = len(ok) / sent if sent else 0.0
    median = quantile([float(r.get("latency_ms") or 0) for r in ok], 0.5) if ok else None
    labelled = [r for r in ok if r.get("label") is not None]
    accuracy = (sum(1 for r in labelled if r.get("predicted_label") == r.get("label"))
                / len(labelled)) if labelled else None
    reasons = []
    if answered < sent:
        reasons.append(f"{sent - answered} of {sent} replayed requests got no answer")
    if rate < min_success_rate:
        reasons.append(f"{len(ok)} of {sent} ok ({_pct(rate)} < {_pct(min_success_rate)})")
    if latency_ms is not None and median is not None and median > latency_ms:
        reasons.append(f"median latency {median:.0f} ms over the {latency_ms:g} ms objective")
    if (accuracy is not None and stable_accuracy is not None
            and accuracy < stable_accuracy - max_accuracy_drop):
        reasons.append(f"accuracy {_pct(accuracy)} vs {_pct(stable_accuracy)} for stable on "
                       f"the same {len(labelled)} labelled requests")
    statuses = Counter(str(r.get("status")) for r in rows)
    return {"passed": not reasons and sent > 0, "sent": sent, "answered": answered,
            "ok": len(ok), "success_rate": rate, "min_success_rate": min_success_rate,
            "median_latency_ms": median, "latency_objective_ms": latency_ms,
            "accuracy": accuracy, "stable_accuracy": stable_accuracy, "labelled": len(labelled),
            "statuses": dict(sorted(statuses.items())),
            "reason": "; ".join(reasons) if reasons else f"{len(ok)} of {sent} ok"}


def retest_backoff(failed_retests: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before the next re-test: doubles after each failed one, capped."""
    return min(max_s, base_s * (2.0 ** max(0, failed_retests)))


def tracker_from_config(quarantine: Any, slo: Any) -> HealthTracker:
    """A HealthTracker with the versions file's `quarantine:` and `slo:` settings."""
    q = quarantine
    return HealthTracker(
        consecutive_failures=q.consecutive_failures, window=q.window,
        max_error_rate=q.max_error_rate, min_samples=q.min_samples,
        invalid_outputs=q.invalid_outputs, latency_ms=slo.latency_ms,
        latency_quantile=q.latency_quantile, latency_min_samples=q.latency_min_samples,
        latency_overrides={v: o.latency_ms for v, o in slo.per_version.items()
                           if o.latency_ms is not None},
        accuracy_window=q.accuracy_window, accuracy_min_samples=q.accuracy_min_samples,
        accuracy_max_drop=q.accuracy_max_drop, accuracy_confidence=q.accuracy_confidence,
        triggers=q.triggers)
