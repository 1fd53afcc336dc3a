"""The learner agent's decisions (pure): which repositories are due a refit, the ids and specs
of the versions it registers, their model cards, and which older refits it archives.

streams/flows/learner.py runs them on the leader's timer (`learner:` in the versions file):

- a repository is **due** when its count (labels plus corrections: infra.queries.label_counts)
  is at least `refit_every` more than its newest learner version's (0 when it has none);
- each refit is a version `learner-<repo slug>-n<count>` scoped to the repository
  (`spec.repos = [repo]`: agents/routing.py mirrors only that repository's requests to it),
  registered in shadow; the register event's id is hashed from task, repository and label
  count, so a doubled leader tick registers once;
- at most `keep_per_repo` learner versions of a repository stay registered: older ones still
  in shadow (or registered, or quarantined) are archived, and so are deprecated ones older than
  the newest deprecated one (what a rollback would restore); a canary, a stable one and that
  deprecated one are the gates' business and are never touched here.

The state of every refit lives in its own directory, `$REVIEWBUS_HOME/learner/<version id>`
(the backend's default), so a new refit never rewrites a state another version serves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import LifecycleAction, LifecycleEvent, Registry, VersionSpec, VersionState

from ..lifecycle_commands import register_event

PREFIX = "learner-"
ACTOR = "learner"
_COUNT = re.compile(r"-n(\d+)$")
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
ARCHIVABLE = (VersionState.registered, VersionState.shadow, VersionState.quarantined)


class LearnerAgentConfig(BaseModel):
    """`learner:` in the versions file (the live learner agent, streams/flows/learner.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False  # off unless the versions file turns it on
    interval_s: float = Field(default=300.0, gt=0)  # how often the leader looks for due repos
    refit_every: int = Field(default=50, ge=1)  # new labels or corrections before a refit
    keep_per_repo: int = Field(default=3, ge=1)  # learner versions kept registered per repo
    takeover: int = Field(default=100, ge=1)  # labels from which a repo's own model answers
    half: float = Field(default=200.0, ge=0)  # own weight n / (n + half)
    holdout_fraction: float = Field(default=0.15, ge=0, lt=1)  # 0: no holdout fit
    params: dict[str, Any] = Field(default_factory=dict)  # LearnerParams
    timeout_s: float = Field(default=30.0, gt=0)  # the versions' inference timeout
    # The newest labelled commits a refit reads, so that a refit takes the same time in the
    # first month and the twelfth: of the due repository (its own model; 0: all of them) and
    # of every repository (the global base; 0: all of them).
    max_labels_per_repo: int = Field(default=2000, ge=0)
    base_labels_per_repo: int = Field(default=1000, ge=0)

    @model_validator(mode="after")
    def _window_holds_takeover(self) -> LearnerAgentConfig:
        if 0 < self.max_labels_per_repo < self.takeover:
            raise ValueError(f"learner.max_labels_per_repo ({self.max_labels_per_repo}) is "
                             f"below takeover ({self.takeover}): no own model would ever fit")
        return self


@dataclass(frozen=True)
class Due:
    repo: str
    labels: int  # the repository's count now: labels plus corrections
    last: int  # the count in its newest learner version's id (0: none)
    parent: str | None  # that version


def slug(repo: str) -> str:
    """A version-id-safe form of a repository name, at most 45 characters (a hash keeps two
    long names apart)."""
    s = _SLUG.sub("__", repo).strip("._-") or "repo"
    if len(s) > 45:
        s = s[:36] + "-" + hashlib.sha256(repo.encode()).hexdigest()[:8]
    return s


def version_id(repo: str, labels: int) -> str:
    return f"{PREFIX}{slug(repo)}-n{labels}"


def refit_event_id(task: str, repo: str, labels: int) -> str:
    return hashlib.sha256(f"{task}|{repo}|learner-refit|{labels}".encode()).hexdigest()[:32]


def archive_event_id(task: str, version: str, state: VersionState) -> str:
    return hashlib.sha256(f"{task}|{version}|learner-archive|{state.value}".encode()
                          ).hexdigest()[:32]


def labels_of(version: str) -> int | None:
    """The label count in a learner version's id (None: not a learner refit's id)."""
    if not version.startswith(PREFIX):
        return None
    m = _COUNT.search(version)
    return int(m.group(1)) if m else None


def refits(registry: Registry, repo: str) -> list[tuple[int, str, VersionState]]:
    """(labels, version id, state) of the learner's versions of a repository, oldest first."""
    out = []
    for vid, entry in registry.versions.items():
        n = labels_of(vid)
        if n is None or entry.spec.backend != "learner" or entry.spec.repos != [repo]:
            continue
        out.append((n, vid, entry.state))
    return sorted(out)


def due_repos(counts: Mapping[str, int], registry: Registry, refit_every: int) -> list[Due]:
    """The repositories with at least `refit_every` labels more than their newest refit saw."""
    out = []
    for repo in sorted(counts):
        mine = refits(registry, repo)
        last, parent = (mine[-1][0], mine[-1][1]) if mine else (0, None)
        if counts[repo] - last >= refit_every:
            out.append(Due(repo, int(counts[repo]), last, parent))
    return out


def newest_per_repo(examples: Sequence[Any], k: int) -> list[Any]:
    """Each repository's newest `k` examples (0: all), in the given (author-date) order."""
    if k <= 0:
        return list(examples)
    seen: dict[str, int] = {}
    keep = []
    for e in reversed(examples):
        if seen.get(e.repo, 0) < k:
            seen[e.repo] = seen.get(e.repo, 0) + 1
            keep.append(e)
    return keep[::-1]


def refit_spec(task: str, repo: str, labels: int, config: LearnerAgentConfig) -> VersionSpec:
    return VersionSpec(
        id=version_id(repo, labels), task=task, backend="learner",
        params={"takeover": config.takeover, "half": config.half},
        timeout_s=config.timeout_s, initial_state=VersionState.shadow, repos=[repo],
        description=f"learner refit of {repo} on {labels} labels")


def model_card(repo: str, examples: Sequence[Any], *, global_rows: int, params: Mapping[str, Any],
               takeover: int, half: float, parent: str | None, metrics: Mapping[str, Any],
               fit_s: float, state_dir: str, base_fit_s: float = 0.0,
               labels: int | None = None, corrections: int = 0) -> dict[str, Any]:
    """What a refit was fitted on and how it scored. `examples`: the repository's labelled
    examples (agents.learning.data.Example) the refit used, in author-date order; `labels`:
    the repository's count, labels plus `corrections` (more than `examples` when the refit
    read only its newest; the version's id carries it); `fit_s`: its own model and holdout
    fits, `base_fit_s`: the global base's (shared by the tick)."""
    dates = [e.author_date for e in examples if e.author_date]
    by_label: dict[str, int] = {}
    for e in examples:
        by_label[e.label] = by_label.get(e.label, 0) + 1
    return {
        "repo": repo,
        "data": {"labels": len(examples) if labels is None else labels,
                 "fitted_labels": len(examples), "corrections": corrections,
                 "first_author_date": dates[0] if dates else None,
                 "last_author_date": dates[-1] if dates else None,
                 "by_label": dict(sorted(by_label.items())), "global_rows": global_rows},
        "params": dict(params), "takeover": takeover, "half": half,
        "own_model": len(examples) >= takeover,
        "parent": parent, "metrics": dict(metrics), "fit_s": round(fit_s, 3),
        "base_fit_s": round(base_fit_s, 3),
        "state_dir": state_dir,
    }


def refit_event(registry: Registry, spec: VersionSpec, card: Mapping[str, Any]) -> LifecycleEvent:
    """The register event of a refit: the config's register event, with the refit's id (task,
    repository, labels) and the model card as evidence."""
    repo = spec.repos[0]
    labels = int(card["data"]["labels"])
    metrics = card.get("metrics") or {}
    hold = metrics.get("holdout") or {}
    score = f", holdout accuracy {hold['accuracy']}" if "accuracy" in hold else ""
    event = register_event(registry, spec, ACTOR,
                           f"refit of {repo} on {labels} labels{score} "
                           f"(parent {card.get('parent') or 'none'})")
    return event.model_copy(update={"event_id": refit_event_id(registry.task, repo, labels),
                                    "evidence": {"model_card": dict(card)}})


def archive_events(registry: Registry, repo: str, keep: int) -> list[LifecycleEvent]:
    """Archive the oldest of a repository's learner versions beyond the newest `keep` that are
    not archived, when they are only candidates (shadow, registered, quarantined) or
    deprecated refits older than the newest deprecated one (a rollback restores that one
    only: promoted refits replaced one another for the repository)."""
    live = [(n, vid, st) for n, vid, st in refits(registry, repo) if st != VersionState.archived]
    # the most recently deprecated refit is what a rollback of the repository restores
    deprecated = sorted((registry.versions[vid].since or datetime.min.replace(tzinfo=UTC), vid)
                        for _n, vid, st in live if st == VersionState.deprecated)
    restorable = deprecated[-1][1] if deprecated else None
    out = []
    for _n, vid, state in live[:max(0, len(live) - keep)]:
        if state not in ARCHIVABLE and not (state == VersionState.deprecated
                                            and vid != restorable):
            continue
        out.append(LifecycleEvent(
            event_id=archive_event_id(registry.task, vid, state), task=registry.task, version_id=vid,
            action=LifecycleAction.archive, from_state=state, to_state=VersionState.archived,
            actor=ACTOR, reason=f"newer learner refits of {repo} replace it (keep {keep})"))
    return out


def archive_all(registry: Registry, keep: int) -> list[LifecycleEvent]:
    """archive_events for every repository the learner has versions of."""
    repos = sorted({e.spec.repos[0] for vid, e in registry.versions.items()
                    if labels_of(vid) is not None and len(e.spec.repos) == 1})
    return [ev for repo in repos for ev in archive_events(registry, repo, keep)]


def archived_refits(registry: Registry) -> list[str]:
    """The learner's versions that are archived (their state directories can go)."""
    return sorted(vid for vid, e in registry.versions.items()
                  if labels_of(vid) is not None and e.spec.backend == "learner"
                  and e.state == VersionState.archived)
