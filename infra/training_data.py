"""Training data read from the store: the archive and the feedback, turned into dataset rows
by the pure agents.learning.export.training_rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agents.learning.export import training_rows

from . import queries


def export_rows(store: Any, task: str, since: datetime | None = None,
                val_fraction: float = 0.25) -> list[dict[str, Any]]:
    """Rows {id, repo, sha, author_date, message, diff, diff_truncated, files, label, split},
    one per commit of `task` (since `since`), split into train and val."""
    archive = queries.training_archive(task, since)
    feedback = queries.change_type_feedback()
    return training_rows(store.query(archive.sql, archive.params).as_dicts(),
                         store.query(feedback.sql, feedback.params).as_dicts(), val_fraction)
