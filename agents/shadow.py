"""Shadow comparison (the pure part): how a candidate's answer relates to the stable one.

Findings are compared by fingerprint (stable across line moves and reruns), as sets: a
fingerprint reported twice by one version counts once. precision = share of the candidate's
findings that stable also found; recall = share of stable's findings the candidate also found.
With no findings on either side both are 1.0 (full agreement); a ratio over zero findings is
None. When either side did not answer ok, precision and recall are None: a failed answer says
nothing about finding quality, and the statuses record the failure.
"""

from __future__ import annotations

import hashlib

from schemas import InferenceResult, ShadowComparison, Status


def comparison_id(
    request_id: str, stable_version: str, candidate_version: str, run_id: str | None = None
) -> str:
    """sha256(request_id|stable|candidate)[:32], with |run_id appended for replays only, so a
    redelivered result yields the same comparison id and a replay run a new one."""
    key = f"{request_id}|{stable_version}|{candidate_version}"
    if run_id:
        key += f"|{run_id}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def compare_results(
    stable: InferenceResult, candidate: InferenceResult, label: str | None = None
) -> ShadowComparison:
    if stable.request_id != candidate.request_id:
        raise ValueError(
            f"results of different requests: {stable.request_id} vs {candidate.request_id}"
        )
    stable_label = stable.change_type.label if stable.change_type else None
    candidate_label = candidate.change_type.label if candidate.change_type else None
    agree = None
    if stable_label is not None and candidate_label is not None:
        agree = stable_label == candidate_label

    s_fp = {f.fingerprint for f in stable.findings}
    c_fp = {f.fingerprint for f in candidate.findings}
    overlap = len(s_fp & c_fp)
    precision: float | None
    recall: float | None
    if stable.status != Status.ok or candidate.status != Status.ok:
        precision = recall = None
    elif not s_fp and not c_fp:
        precision = recall = 1.0
    else:
        precision, recall = _ratio(overlap, len(c_fp)), _ratio(overlap, len(s_fp))

    return ShadowComparison(
        event_id=comparison_id(
            stable.request_id, stable.version_id, candidate.version_id,
            candidate.run_id or stable.run_id,
        ),
        request_id=stable.request_id,
        task=stable.task,
        stable_version=stable.version_id,
        candidate_version=candidate.version_id,
        stable_status=stable.status,
        candidate_status=candidate.status,
        label=label if label is not None else (stable.label or candidate.label),
        stable_label=stable_label,
        candidate_label=candidate_label,
        change_type_agree=agree,
        stable_findings=len(s_fp),
        candidate_findings=len(c_fp),
        overlap=overlap,
        precision=precision,
        recall=recall,
        latency_delta_ms=candidate.latency_ms - stable.latency_ms,
        accepted_at=candidate.accepted_at or stable.accepted_at,
    )
