"""What the model must answer: the pydantic answer models, the JSON schema generated from them
(sent with `response_format: json_schema` and quoted in the prompt), the parsing of the model's
text, and the answer -> Prediction mapping (findings only on changed files, stable fingerprints)."""

from __future__ import annotations

import json
import logging
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas import CHANGE_TYPES, ChangeType, Dimension, Finding, NormalizedChange, Risk, Severity, Usage

from ...changetype import SUBJECT_MAX, risk_score
from ...conventional import LABEL_MAP
from ...diffparse import parse_diff
from ...errors import InvalidOutput
from ...fingerprint import fingerprint, normalize_path
from ..base import Prediction
from ..filters import apply_filters

log = logging.getLogger("reviewbus.litellm")

_CC_TYPES = tuple(sorted(LABEL_MAP))
_Unit = Annotated[float, Field(ge=0.0, le=1.0)]
_SUBJECT = re.compile(r"^(?P<type>[a-z]+)(?:\([^()\r\n]{1,60}\))?!?: \S")


def _norm_label(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    v = value.strip().lower().replace("-", "_").replace(" ", "_")
    return LABEL_MAP.get(v, v)  # a Conventional Commits type ("fix") names its label


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class _LLMFinding(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str = Field(min_length=1, max_length=1024)
    line: int = Field(default=0, ge=0)
    end_line: int | None = Field(default=None, ge=0)
    dimension: Dimension
    severity: Severity
    confidence: float = Field(ge=0.0, le=1.0)
    rule_id: str = Field(default="finding", max_length=200)
    message: str = Field(min_length=1, max_length=4000)
    suggestion: str | None = Field(default=None, max_length=4000)

    _lower_enums = field_validator("dimension", "severity", mode="before")(_lower)

    @field_validator("line", mode="before")
    @classmethod
    def _null_line(cls, v: Any) -> Any:
        return 0 if v is None else v


class _LLMChangeType(BaseModel):
    model_config = ConfigDict(extra="ignore")

    label: Literal[CHANGE_TYPES]  # type: ignore[valid-type]
    confidence: float = Field(ge=0.0, le=1.0)
    scores: dict[Literal[CHANGE_TYPES], _Unit] = Field(default_factory=dict)  # type: ignore[valid-type]

    _label = field_validator("label", mode="before")(_norm_label)

    @field_validator("scores", mode="before")
    @classmethod
    def _score_keys(cls, v: Any) -> Any:
        return {_norm_label(k): s for k, s in v.items()} if isinstance(v, dict) else v


class _LLMRisk(BaseModel):
    model_config = ConfigDict(extra="ignore")

    score: float = Field(ge=0.0, le=1.0)
    level: Literal["low", "medium", "high"] | None = None

    _level = field_validator("level", mode="before")(_lower)


class LLMReview(BaseModel):
    """What the model must answer (extra keys are ignored; everything named is validated)."""

    model_config = ConfigDict(extra="ignore")

    change_type: _LLMChangeType
    risk: _LLMRisk | None = None
    findings: list[_LLMFinding] = Field(default_factory=list, max_length=500)
    suggested_message: str

    @field_validator("suggested_message", mode="before")
    @classmethod
    def _subject(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        first = next((ln.strip() for ln in v.strip().splitlines() if ln.strip()), "")
        first = first.strip("`\"' ")
        m = _SUBJECT.match(first)
        if m is None or m.group("type") not in LABEL_MAP:
            raise ValueError("must be a Conventional Commits subject 'type(scope): description' "
                             f"with type one of {', '.join(_CC_TYPES)}; got {first[:80]!r}")
        if len(first) > SUBJECT_MAX:
            first = first[: SUBJECT_MAX - 3].rstrip() + "..."
        return first

    @model_validator(mode="after")
    def _ends(self) -> LLMReview:
        for f in self.findings:
            if f.end_line is not None and f.end_line < f.line:
                raise ValueError(f"finding at {f.path}:{f.line} ends before it starts")
        return self


_REASONING = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_REASONING_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)


def parse_review(content: str | None) -> LLMReview:
    """The model's text -> a validated LLMReview, or InvalidOutput saying what was wrong."""
    if content is None or not content.strip():
        raise InvalidOutput("the model returned no text")
    text = content.strip()
    thought = _REASONING.match(text)
    if thought:  # reasoning models (DeepSeek-R1, Qwen3, ...) think aloud before the answer
        text = text[thought.end():].strip()
        if not text:
            raise InvalidOutput("the model's answer is only a reasoning block, no JSON after "
                                f"</{thought.group(1)}>")
    elif _REASONING_OPEN.match(text):
        raise InvalidOutput("the model's reasoning block never closed (is max_tokens too low "
                            "for a reasoning model?)")
    fenced = re.match(r"^```[A-Za-z]*\s*\n(.*?)\n?```\s*$", text, re.DOTALL)
    if fenced:  # "JSON only" was asked, but a Markdown fence around it is common enough
        text = fenced.group(1).strip()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidOutput(f"the model's answer is not JSON ({exc}): {text[:200]!r}") from exc
    if not isinstance(data, dict):
        raise InvalidOutput(f"the model's answer is JSON but not an object: {text[:200]!r}")
    try:
        return LLMReview.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()[:5])
        raise InvalidOutput(f"the model's answer does not match the schema: {problems}") from exc


_RULE_CHARS = re.compile(r"[^a-z0-9._-]+")


def _rule_id(raw: str) -> str:
    slug = _RULE_CHARS.sub("-", raw.strip().lower()).strip("-.")[:48]
    return f"llm:{slug or 'finding'}"


def _line_texts(change: NormalizedChange) -> dict[str, dict[int, str]]:
    """Per normalized path, line number -> text: the post-image where we have it, else the diff."""
    out: dict[str, dict[int, str]] = {}
    for fd in parse_diff(change.diff):
        if fd.path:
            out.setdefault(fd.path, {}).update(fd.added)
    for f in change.files:
        if f.content is not None:
            lines = f.content.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            out[normalize_path(f.path)] = {i + 1: t for i, t in enumerate(lines)}
    return out


def _level(score: float) -> str:
    return "high" if score >= 0.67 else "medium" if score >= 0.34 else "low"


def _changed_path(raw: str, known: dict[str, str]) -> str | None:
    """The changed file a finding names, or None. Models often copy the diff header's
    `b/path` (or `a/path`) instead of the listed path; a real `a/` or `b/` folder wins."""
    path = normalize_path(raw)
    if path in known:
        return path
    if path[:2] in ("a/", "b/") and path[2:] in known:
        return path[2:]
    return None


def to_prediction(review: LLMReview, change: NormalizedChange, *, source: str,
                  filters: list[dict[str, Any]], max_findings: int, usage: Usage) -> Prediction:
    known = {normalize_path(f.path): f.path for f in change.files}
    for fd in parse_diff(change.diff):
        for p in (fd.path, fd.old_path):
            if p:
                known.setdefault(p, p)
    texts = _line_texts(change)
    findings: list[Finding] = []
    dropped = 0
    for f in review.findings:
        path = _changed_path(f.path, known)
        if path is None:  # a file the change does not touch: the model made it up
            dropped += 1
            continue
        rule = _rule_id(f.rule_id)
        findings.append(Finding(
            fingerprint=fingerprint(rule, path, texts.get(path, {}).get(f.line, "")),
            dimension=f.dimension, severity=f.severity, confidence=round(f.confidence, 4),
            path=path, line=f.line,
            end_line=f.end_line if f.end_line not in (None, f.line) else None,
            rule_id=rule, message=f.message.strip(), source=source,
            suggestion=(f.suggestion or "").strip() or None,
        ))
    if dropped:
        log.info("%s: dropped %d finding(s) on paths outside the change", source, dropped)
    findings = apply_filters(findings, filters)
    if len(findings) > max_findings:
        findings = apply_filters(findings, [{"max_findings": max_findings}])
    ct = review.change_type
    scores = {k: round(v, 4) for k, v in ct.scores.items()} or {ct.label: round(ct.confidence, 4)}
    change_type = ChangeType(label=ct.label, confidence=round(ct.confidence, 4), scores=scores)
    if review.risk is not None:
        risk = Risk(score=round(review.risk.score, 4),
                    level=review.risk.level or _level(review.risk.score))
    else:
        risk = risk_score(change, findings)
    return Prediction(change_type=change_type, risk=risk, findings=findings,
                      suggested_message=review.suggested_message, usage=usage)


# ---------------------------------------------------------------- the schema sent to the model

_DROPPED_KEYWORDS = frozenset({"title", "description", "default", "propertyNames"})


def _for_providers(node: Any, defs: dict[str, Any]) -> Any:
    """pydantic's schema, adjusted for what providers accept: `$ref`s inlined (no `$defs`), no
    titles, descriptions, defaults or propertyNames, `anyOf [X, null]` written as X with a nullable type, and
    every property required (we ask for every key; a nullable one may be null). The model stays
    more lenient than the schema (defaults, label aliases), never stricter."""
    if isinstance(node, list):
        return [_for_providers(x, defs) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _for_providers(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    options = node.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and {"type": "null"} in options:
        inner = dict(_for_providers(next(o for o in options if o != {"type": "null"}), defs))
        inner["type"] = [inner["type"], "null"]
        if "enum" in inner:
            inner["enum"] = [*inner["enum"], None]
        return inner
    out = {k: _for_providers(v, defs) for k, v in node.items()
           if k not in _DROPPED_KEYWORDS and k != "$defs"}
    if out.get("type") == "object" and "properties" in out:
        out["required"] = list(out["properties"])
    return out


def output_json_schema() -> dict[str, Any]:
    """The JSON schema of LLMReview, generated from the model (see _for_providers)."""
    schema = LLMReview.model_json_schema()
    result: dict[str, Any] = _for_providers(schema, schema.get("$defs", {}))
    return result


OUTPUT_JSON_SCHEMA: dict[str, Any] = output_json_schema()
