"""Consensus backend: the original design's multi-model protocol over two or more member versions.

Members run concurrently on the same batch (each under its own `timeout_s`). Their answers are
merged per change:

- Findings are matched across members, one to one, greedily in member order: same fingerprint
  first, else same path + line + dimension. A matched group is one finding, supported by k of
  the n members that answered.
- A critical or security finding is reported only when every answering member supports it.
  Otherwise it is flagged for manual review (``on_disagreement: flag``, the default): the
  rule id gets the suffix ``#needs-review``, the severity becomes ``info`` (so that no CI gate
  fires on it), and the message starts with ``[needs review: ...]`` naming the original
  severity, dimension and the members that reported it. ``on_disagreement: drop`` leaves it
  out instead.
- Every other finding (high and below, not security) needs one member.
- Reported severity: the least severe one that all supporters gave (what they agree on).
- Confidence: the supporters' mean, x1.0 when two or more members agree, x0.7 for one member.
- Change type: member scores averaged per label (a member without scores counts
  {label: confidence}); the label is the argmax. Risk: the mean score. Suggested message: the
  first member's (in `members` order) whose type matches the consensus label, else the first.
- Usage: tokens and cost summed over members; models joined with "+".

Member specs: `members` lists version ids of the same versions file; `agents.config` resolves
them when the file is loaded and embeds their specs in this version's params as
`member_specs` (see `resolve_members`). The version is then self-contained: the spec
registered on the lifecycle topic says exactly what ran, and the backend needs nothing but
its own spec. A member may also be written inline (a spec mapping) instead of an id.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas import (
    CHANGE_TYPES,
    SEVERITY_ORDER,
    ChangeType,
    Dimension,
    Finding,
    NormalizedChange,
    Risk,
    Severity,
    Usage,
    VersionSpec,
)

from ..changetype import suggest_message
from ..conventional import parse_prefix
from ..errors import BackendError, ConfigError, InvalidOutput
from ..fingerprint import normalize_path
from .base import Backend, Prediction, build_backend
from .filters import apply_filters, validate_filters

AGREE_FACTOR = 1.0
SINGLE_FACTOR = 0.7
NEEDS_REVIEW = "#needs-review"
BACKEND_NAME = "consensus"


class ConsensusParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    members: list[str] = Field(min_length=2)
    member_specs: list[VersionSpec] = Field(default_factory=list)
    min_members: int | None = Field(default=None, ge=1)  # answers needed; default: all members
    on_disagreement: Literal["flag", "drop"] = "flag"

    @model_validator(mode="after")
    def _consistent(self) -> ConsensusParams:
        if len(set(self.members)) != len(self.members):
            raise ValueError("members must be distinct")
        if self.member_specs and [s.id for s in self.member_specs] != self.members:
            raise ValueError("member_specs must be the specs of members, in the same order")
        if self.min_members is not None and self.min_members > len(self.members):
            raise ValueError("min_members cannot exceed the number of members")
        return self


# ---------------------------------------------------------------- resolving member ids


def resolve_members(versions: list[Any]) -> list[Any]:
    """Embed the member specs of every consensus version (the versions file, before validation).

    `versions` holds mappings (or VersionSpecs); returns a new list where each consensus
    version's params carry `members` (ids) and `member_specs` (full specs, in order). A member
    is the id of another version of the file, or an inline spec mapping. Mistakes are
    ConfigErrors naming the version.
    """
    def as_dict(v: Any) -> Any:
        return v.model_dump(mode="json") if isinstance(v, VersionSpec) else v

    raw = [as_dict(v) for v in versions]
    by_id = {v.get("id"): v for v in raw if isinstance(v, dict)}
    out = []
    for v in raw:
        if not isinstance(v, dict) or v.get("backend") != BACKEND_NAME:
            out.append(v)
            continue
        vid = v.get("id")
        params = dict(v.get("params") or {})
        members = params.get("members")
        # Already resolved (a config validated again): inline members are only found there.
        resolved = {s.get("id"): s for s in map(as_dict, params.get("member_specs") or [])
                    if isinstance(s, dict)}
        if not isinstance(members, list) or len(members) < 2:
            raise ConfigError(f"version {vid}: consensus needs params.members: a list of 2 or "
                              "more version ids")
        specs = []
        for m in members:
            spec = by_id.get(m, resolved.get(m)) if isinstance(m, str) else m
            if isinstance(m, str) and spec is None:
                raise ConfigError(f"version {vid}: consensus member {m!r} is not a version of "
                                  f"this file; known: {sorted(str(k) for k in by_id if k != vid)}")
            if not isinstance(spec, dict):
                raise ConfigError(f"version {vid}: consensus member {m!r} must be a version id "
                                  "or a version spec")
            if spec.get("id") == vid or spec.get("backend") == BACKEND_NAME:
                raise ConfigError(f"version {vid}: consensus member {spec.get('id')!r} cannot "
                                  "be itself or another consensus version")
            member = {"task": v.get("task", "code-review"), **spec}
            try:  # canonical form: resolving a resolved config again gives the same spec
                canonical = VersionSpec.model_validate(member).model_dump(
                    mode="json", exclude={"initial_state", "initial_traffic_percent"})
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ConfigError(f"version {vid}: consensus member {spec.get('id')!r}: "
                                  f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
                                  ) from exc
            specs.append(canonical)
        params["members"] = [s.get("id") for s in specs]
        params["member_specs"] = specs
        out.append({**v, "params": params})
    return out


# ---------------------------------------------------------------- merging answers


def _views(group: dict[int, Finding]) -> list[Finding]:
    return [group[i] for i in sorted(group)]


def _critical(f: Finding) -> bool:
    return f.severity == Severity.critical or f.dimension == Dimension.security


def _match(f: Finding, candidates: list[Finding], taken: set[int]) -> int | None:
    free = [(b, g) for b, g in enumerate(candidates) if b not in taken]
    for b, g in free:
        if g.fingerprint == f.fingerprint:
            return b
    where = (normalize_path(f.path), f.line, f.dimension)
    for b, g in free:
        if (normalize_path(g.path), g.line, g.dimension) == where:
            return b
    return None


def group_findings(per_member: list[list[Finding]]) -> list[dict[int, Finding]]:
    """One-to-one greedy matching across members, in member order: [{member index: finding}]."""
    taken: list[set[int]] = [set() for _ in per_member]
    groups = []
    for i, findings in enumerate(per_member):
        for a, f in enumerate(findings):
            if a in taken[i]:
                continue
            taken[i].add(a)
            group = {i: f}
            for j in range(i + 1, len(per_member)):
                b = _match(f, per_member[j], taken[j])
                if b is not None:
                    taken[j].add(b)
                    group[j] = per_member[j][b]
            groups.append(group)
    return groups


def merge_findings(per_member: list[list[Finding]], names: list[str],
                   on_disagreement: str = "flag") -> list[Finding]:
    """The consensus findings of n answering members (names[i] is member i's version id)."""
    n = len(per_member)
    out = []
    for group in group_findings(per_member):
        views = _views(group)
        k = len(views)
        supporters = [names[i] for i in sorted(group)]
        first = views[0]
        severity = max((v.severity for v in views), key=lambda s: SEVERITY_ORDER[s])
        factor = AGREE_FACTOR if k >= 2 else SINGLE_FACTOR
        confidence = round(min(1.0, sum(v.confidence for v in views) / k * factor), 4)
        source = f"consensus:{'+'.join(supporters)}"[:200]
        if any(_critical(v) for v in views) and k < n:
            if on_disagreement == "drop":
                continue
            strongest = min(views, key=lambda v: SEVERITY_ORDER[v.severity])
            note = (f"[needs review: {strongest.severity.value} {strongest.dimension.value} "
                    f"finding reported by {k} of {n} members ({', '.join(supporters)})] ")
            out.append(first.model_copy(update={
                "severity": Severity.info, "confidence": confidence, "source": source,
                "rule_id": f"{first.rule_id}{NEEDS_REVIEW}",
                "message": note + first.message,
                "suggestion": first.suggestion or "Consensus requires every member to agree on "
                                                  "critical and security findings: check by hand.",
            }))
            continue
        out.append(first.model_copy(update={
            "severity": severity, "confidence": confidence, "source": source}))
    out.sort(key=lambda f: (f.path, f.line, f.rule_id))
    return out


def merge_change_type(types: list[ChangeType]) -> ChangeType | None:
    if not types:
        return None
    totals: dict[str, float] = {}
    for ct in types:
        scores = ct.scores or {ct.label: ct.confidence}
        for label, score in scores.items():
            totals[label] = totals.get(label, 0.0) + float(score)
    mean = {label: round(total / len(types), 4) for label, total in totals.items()}
    order = {label: i for i, label in enumerate(CHANGE_TYPES)}
    label = min(mean, key=lambda lb: (-mean[lb], order.get(lb, len(order)), lb))
    return ChangeType(label=label, confidence=min(1.0, mean[label]), scores=mean)


def merge_risk(risks: list[Risk]) -> Risk | None:
    if not risks:
        return None
    score = round(sum(r.score for r in risks) / len(risks), 4)
    return Risk(score=score, level="high" if score >= 0.67 else "medium" if score >= 0.34 else "low")


def merge_usage(usages: list[Usage]) -> Usage:
    models = [u.model for u in usages if u.model]
    hashes = [u.prompt_hash for u in usages if u.prompt_hash]
    combined = None
    if hashes:
        combined = (hashes[0] if len(set(hashes)) == 1 else
                    hashlib.sha256("+".join(hashes).encode()).hexdigest()[:16])
    return Usage(prompt_tokens=sum(u.prompt_tokens for u in usages),
                 completion_tokens=sum(u.completion_tokens for u in usages),
                 cost_usd=round(sum(u.cost_usd for u in usages), 10),
                 model="+".join(dict.fromkeys(models)) or None, prompt_hash=combined)


def merge(preds: list[Prediction], names: list[str], change: NormalizedChange,
          on_disagreement: str = "flag") -> Prediction:
    """One change: the answers of the members that answered (in member order) -> one answer."""
    change_type = merge_change_type([p.change_type for p in preds if p.change_type])
    message = None
    if change_type is not None:
        for p in preds:
            if p.suggested_message:
                _raw, label, _rest = parse_prefix(p.suggested_message)
                if label == change_type.label:
                    message = p.suggested_message
                    break
    if message is None:
        message = next((p.suggested_message for p in preds if p.suggested_message), None)
    if message is None and change_type is not None:
        message = suggest_message(change_type.label, change)
    return Prediction(
        change_type=change_type,
        risk=merge_risk([p.risk for p in preds if p.risk]),
        findings=merge_findings([p.findings for p in preds], names, on_disagreement),
        suggested_message=message,
        usage=merge_usage([p.usage for p in preds]),
    )


# ---------------------------------------------------------------- the backend


class ConsensusBackend:
    """params: members (ids, 2+), member_specs (filled by agents.config), min_members,
    on_disagreement (flag|drop)."""

    def __init__(self, spec: VersionSpec) -> None:
        self.spec = spec
        try:
            self.params = ConsensusParams.model_validate(dict(spec.params))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "params"
            raise ConfigError(f"version {spec.id}: consensus params.{where}: {first['msg']}") from exc
        if not self.params.member_specs:
            raise ConfigError(f"version {spec.id}: consensus members {self.params.members} are "
                              "not resolved; load the versions file with infra.config_file.load_config "
                              "(or give member_specs inline)")
        self.filters = validate_filters(spec.id, list(spec.filters))
        self.members = list(self.params.member_specs)
        self.min_members = self.params.min_members or len(self.members)
        self.backends: list[Backend] = [build_backend(m) for m in self.members]

    async def infer(self, batch: list[NormalizedChange]) -> list[Prediction]:
        outcomes = await asyncio.gather(*(self._member(m, b, batch)
                                          for m, b in zip(self.members, self.backends)),
                                        return_exceptions=True)
        answered = [(m.id, o) for m, o in zip(self.members, outcomes) if isinstance(o, list)]
        failed = [(m.id, o) for m, o in zip(self.members, outcomes) if isinstance(o, BaseException)]
        if len(answered) < self.min_members:
            raise self._quorum_error(answered, failed)
        names = [name for name, _ in answered]
        out = []
        for idx, change in enumerate(batch):
            pred = merge([preds[idx] for _, preds in answered], names, change,
                         self.params.on_disagreement)
            findings = apply_filters(pred.findings, self.filters)
            out.append(pred.model_copy(update={"findings": findings}))
        return out

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends), return_exceptions=True)

    async def _member(self, spec: VersionSpec, backend: Backend,
                      batch: list[NormalizedChange]) -> list[Prediction]:
        try:
            preds = await asyncio.wait_for(backend.infer(batch), timeout=spec.timeout_s)
        except TimeoutError as exc:  # the member's own timeout message, if it has one
            raise TimeoutError(str(exc) or f"no answer within {spec.timeout_s:g} s") from exc
        if len(preds) != len(batch) or not all(isinstance(p, Prediction) for p in preds):
            raise InvalidOutput(f"{len(preds)} predictions for {len(batch)} changes")
        return list(preds)

    def _quorum_error(self, answered: list[Any], failed: list[tuple[str, BaseException]]) -> BackendError:
        detail = "; ".join(f"{name}: {type(e).__name__}: {e}"[:300] for name, e in failed)
        text = (f"consensus needs {self.min_members} member answers, got {len(answered)} "
                f"({detail})")
        errors = [e for _, e in failed]
        if errors and all(isinstance(e, TimeoutError) for e in errors):
            return _ConsensusTimeout(text)
        if errors and all(isinstance(e, InvalidOutput) for e in errors):
            return InvalidOutput(text)
        return BackendError(text)


class _ConsensusTimeout(BackendError, TimeoutError):
    """Every failing member timed out: the consensus version's result is a `timeout`."""
