"""Training data from ClickHouse: labelled interactions as rows of the datasets' JSONL format.

Labels: the Conventional Commits type that intake read off each commit (the archived input
carries it), overridden by feedback: a Feedback with `fingerprint = "change_type:<label>"` and
a request_id says the request's change type is <label> (true_positive) or is not <label>
(false_positive, which drops the row when that was its label). The latest feedback wins.

Pure: infra.training_data.export_rows runs the queries (infra.queries.training_archive and
change_type_feedback) and hands their rows to training_rows.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from schemas import CHANGE_TYPES, AcceptedChange

from .data import date_key, repo_split

FEEDBACK_PREFIX = "change_type:"


def apply_feedback(labels: dict[str, str | None], feedback: list[dict[str, Any]]
                   ) -> dict[str, str | None]:
    out = dict(labels)
    for fb in feedback:
        request_id = fb.get("request_id")
        label = str(fb.get("fingerprint", ""))[len(FEEDBACK_PREFIX):]
        if request_id not in out or label not in CHANGE_TYPES:
            continue
        if fb.get("verdict") == "true_positive":
            out[request_id] = label
        elif out[request_id] == label:
            out[request_id] = None
    return out


def training_rows(archive: list[dict[str, Any]], feedback_rows: list[dict[str, Any]],
                  val_fraction: float = 0.25) -> list[dict[str, Any]]:
    """Rows {id, repo, sha, author_date, message, diff, diff_truncated, files, label, split},
    one per commit, split into train and val by repository (one repository: its newest 15 %
    by author date is val).

    `archive`: the archived requests (request_id, repo, sha, label, accepted, occurred_at),
    oldest first; `feedback_rows`: change-type feedback (request_id, fingerprint, verdict, and
    the repo and sha of its request when known), oldest first. infra.training_data.export_rows
    reads both from the store."""
    # One row per commit: CI may send a commit more than once (a push, then its pull request),
    # and feedback on any of its requests labels the commit (also on a request the archive read
    # left out, e.g. an older one outside the learner's window). The newest request is exported.
    commit_of = {r["request_id"]: f"{r['repo']}@{r['sha']}" for r in archive}
    latest = {commit_of[r["request_id"]]: r for r in archive}  # archive is oldest first
    feedback = [{**fb, "request_id": commit_of.get(fb["request_id"]) or (
                    f"{fb['repo']}@{fb['sha']}" if fb.get("repo") and fb.get("sha") else None)}
                for fb in feedback_rows]
    labels = apply_feedback({commit: r.get("label") for commit, r in latest.items()}, feedback)
    rows: list[dict[str, Any]] = []
    for commit, r in latest.items():
        label = labels.get(commit)
        if label not in CHANGE_TYPES:
            continue
        change = AcceptedChange.model_validate(json.loads(r["accepted"])).change
        # when the commit was written; producers that do not send it sort by arrival
        when = change.authored_at or r.get("occurred_at")
        rows.append({
            "id": r["request_id"], "repo": change.repo, "sha": change.sha,
            "author_date": when.isoformat() if isinstance(when, datetime) else str(when or ""),
            "message": change.message,
            "diff": change.diff, "diff_truncated": change.diff_truncated,
            "files": [{"path": f.path, "status": f.status, "added": f.added, "deleted": f.deleted}
                      for f in change.files],
            "label": label,
        })
    repos = sorted({row["repo"] for row in rows})
    if len(repos) > 1:
        _train, val_repos = repo_split(repos, val_fraction)
        for row in rows:
            row["split"] = "val" if row["repo"] in val_repos else "train"
    else:
        cut = int(round(len(rows) * 0.85))
        for n, row in enumerate(sorted(rows, key=lambda x: (date_key(x["author_date"]), x["id"]))):
            row["split"] = "train" if n < cut else "val"
    return rows
