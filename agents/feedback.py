"""The false-positive filter: feedback -> suppression filters in a version's spec (pure).

People mark findings by fingerprint (`reviewbus feedback FINGERPRINT --false-positive` or
`--confirmed`); the latest verdict per fingerprint counts. For each version and rule, the
false-positive rate is the share of its judged fingerprints marked false positive. A rule of a
candidate whose rate is, with confidence, far above the stable version's (the Wilson lower
bound above the stable rate plus `margin`) gets a `{"suppress_rule": rule}` filter in the
version's spec; the filter is removed again once the evidence no longer supports it (the
point estimate falls to the stable rate plus `margin` or below: hysteresis, no flapping).
The stable rate is the stable version's rate on the same rule when it has `min_feedback`
judged findings of it, else its rate over all its rules (0 when nobody judged any). The stable
version is the one that serves the candidate's repositories: a candidate scoped to
repositories that have a stable version of their own (a promoted learner refit) is compared
with that one, not with the global stable (`baselines`). Its rate is taken over all its
judged findings: findings rows carry no repository to narrow it by.

Only filters this logic added are ever removed: a rule suppressed in the versions file stays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas import Registry

from .routing import baseline_of
from .stats import wilson_interval


class FeedbackFilterConfig(BaseModel):
    """`feedback:` in the versions file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    interval_s: float = Field(default=30.0, gt=0)  # how often the leader re-evaluates
    min_feedback: int = Field(default=5, ge=1)  # judged findings of a rule before acting
    margin: float = Field(default=0.3, ge=0.0, le=1.0)  # "far above" the stable rate
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    window_s: float = Field(default=30 * 24 * 3600.0, gt=0)  # findings considered
    # verdicts considered (the latest per fingerprint counts); bounds the feedback read
    verdict_window_s: float = Field(default=365 * 24 * 3600.0, gt=0)


def suppressed_rules(filters: Iterable[Mapping[str, Any]]) -> set[str]:
    out: set[str] = set()
    for f in filters:
        value = f.get("suppress_rule")
        if isinstance(value, str):
            out.add(value)
        elif isinstance(value, list):
            out.update(str(v) for v in value)
    return out


@dataclass(frozen=True)
class FilterChange:
    version_id: str
    rule_id: str
    action: str  # add | remove
    evidence: dict[str, Any] = field(default_factory=dict)

    def reason(self) -> str:
        e = self.evidence
        verb = "suppress" if self.action == "add" else "stop suppressing"
        return (f"{verb} {self.rule_id}: {e['fp']} of {e['judged']} judged findings false "
                f"positive ({e['fp_rate']:.0%}, lower bound {e['fp_rate_low']:.0%}) vs "
                f"{e['baseline']:.0%} for stable {e['stable_version']}")


def _rate(fp: int, tp: int) -> float:
    return fp / (fp + tp) if fp + tp else 0.0


def baselines_of(registry: Registry, candidates: Iterable[str]) -> dict[str, str | None]:
    """The stable version each candidate is compared with: the one that serves its
    repositories (for a global candidate, or one whose repositories have no stable version of
    their own, the global one; None when there is none). A candidate scoped to repositories
    that no one scoped stable covers together (two repositories with a stable each) is
    compared with the global one too, as quarantine and rotation do (`agents.routing.baseline_of`;
    such a candidate takes part in neither repository's requests)."""
    return {v: baseline_of(registry, v) for v in candidates}


def filter_changes(rows: Sequence[Mapping[str, Any]], stable: str | None,
                   filters: Mapping[str, Sequence[Mapping[str, Any]]],
                   original: Mapping[str, Sequence[Mapping[str, Any]]],
                   config: FeedbackFilterConfig,
                   baselines: Mapping[str, str | None] | None = None) -> list[FilterChange]:
    """The filters to add and remove, from infra.queries.verdicts rows.

    `filters`: each candidate's current filters (from the registry); `original`: its filters
    in the versions file (never removed); `baselines`: the stable version each candidate is
    compared with, where it is not `stable` (a scoped candidate: its repositories' stable).
    A stable version is never filtered.
    """
    counts: dict[str, dict[str, tuple[int, int]]] = {}
    for r in rows:
        counts.setdefault(str(r["version_id"]), {})[str(r["rule_id"])] = (
            int(r.get("fp") or 0), int(r.get("tp") or 0))
    stables = {stable} | set((baselines or {}).values())
    changes: list[FilterChange] = []
    for version, current in sorted(filters.items()):
        base = (baselines or {}).get(version, stable)
        if base is None or version in stables:
            continue
        base_rules = counts.get(base, {})
        base_fp = sum(fp for fp, _ in base_rules.values())
        base_tp = sum(tp for _, tp in base_rules.values())
        active = suppressed_rules(current)
        ours = active - suppressed_rules(original.get(version, ()))
        rules = counts.get(version, {})
        for rule in sorted(set(rules) | ours):
            fp, tp = rules.get(rule, (0, 0))
            judged = fp + tp
            same_rule = base_rules.get(rule)
            if same_rule and sum(same_rule) >= config.min_feedback:
                baseline, basis = _rate(*same_rule), "same rule"
            else:
                baseline, basis = _rate(base_fp, base_tp), "all rules"
            lo, hi = wilson_interval(fp, judged, config.confidence)
            evidence = {
                "version_id": version, "rule_id": rule, "fp": fp, "tp": tp, "judged": judged,
                "fp_rate": _rate(fp, tp), "fp_rate_low": lo, "fp_rate_high": hi,
                "baseline": baseline, "baseline_basis": basis, "stable_version": base,
                "margin": config.margin, "min_feedback": config.min_feedback,
                "confidence": config.confidence,
            }
            if rule not in active:
                if judged >= config.min_feedback and lo > baseline + config.margin:
                    changes.append(FilterChange(version, rule, "add", evidence))
            elif rule in ours and _rate(fp, tp) <= baseline + config.margin:
                changes.append(FilterChange(version, rule, "remove", evidence))
    return changes


def apply_change(filters: Sequence[Mapping[str, Any]], change: FilterChange
                 ) -> list[dict[str, Any]]:
    """The version's filters after one change (a whole-filter add or remove of that rule)."""
    out = [dict(f) for f in filters]
    if change.action == "add":
        return [*out, {"suppress_rule": change.rule_id}]
    kept = []
    for f in out:
        value = f.get("suppress_rule")
        if value == change.rule_id:
            continue
        if isinstance(value, list) and change.rule_id in value:
            rest = [v for v in value if v != change.rule_id]
            if not rest:
                continue
            f = {"suppress_rule": rest}
        kept.append(f)
    return kept
