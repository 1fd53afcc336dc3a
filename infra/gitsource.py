"""Build `CommitEvent`s from a local git repository, with `git` as a subprocess.

Every call runs `git` with a list of arguments (never a shell), an isolated configuration
(no system or global config, so a user's aliases, pagers, external diff drivers or textconv
filters cannot change the output) and the C locale. Failures become one-line
`ReviewbusError`s: "not a git repository: PATH", "unknown revision: X".

Bounds come from `agents.settings.Limits`: the diff is cut at a line end after
`max_diff_chars`; post-image contents are kept per file up to `max_file_bytes`, for at most
`max_files` files and `max_total_content_bytes` in total. Large outputs are never read whole.

The code lives in the `infra/git/` package (runner, revisions, commits); this module keeps
`from infra.gitsource import ...` working.
"""

from __future__ import annotations

from infra.git.commits import _name_from_url, commit_event, commit_events, repo_name_for
from infra.git.revisions import resolve_revisions
from infra.git.runner import (
    GIT_TIMEOUT_S,
    GitError,
    GitUnavailable,
    NotAGitRepository,
    UnknownRevision,
)

__all__ = [
    "GIT_TIMEOUT_S",
    "GitError",
    "GitUnavailable",
    "NotAGitRepository",
    "UnknownRevision",
    "_name_from_url",
    "commit_event",
    "commit_events",
    "repo_name_for",
    "resolve_revisions",
]
