"""Routing: which version serves a request, which versions see a mirrored copy.

Pure. A cohort (a pull request, or a commit without one) hashes to a bucket in [0, 100);
canary versions own consecutive bucket ranges of their traffic share (sorted by version id),
the stable version owns the rest, so a cohort always sees the same version while the
registry does not change. An unavailable choice (open circuit) is healed by a fallback.

A version scoped to repositories (`spec.repos`, e.g. a learner refit) is seen by their
requests only: as a shadow, a canary (its share of their buckets) or their stable version,
which serves them instead of the global stable version; every other repository keeps the
global one.

A candidate (shadow or canary) takes part in a repository's requests only where the stable
version it is measured against (`baseline_of`: the narrowest stable covering its scope, the
global one for a global version) is the one that serves that repository. A global canary
takes no buckets of a repository that has a stable refit of its own, and a version scoped to
several repositories takes none of those among them that have a narrower stable version. So a
candidate is measured where its baseline serves, and only there (`outside_of`). A fallback
is the one exception: when every better choice is unavailable, `choose_fallback` may still
answer with a candidate that does not take part (better than no answer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from schemas import Registry, Role, VersionState

_BUCKET_RESOLUTION = 10**7  # buckets are multiples of 1e-7 percent
_BUCKET_MODULUS = 100 * _BUCKET_RESOLUTION
_GLOBAL = 1 << 30  # the rank of the global stable version: after every scoped one


def cohort_key(repo: str, pull_request: int | None, sha: str) -> str:
    """`repo#pr` for a pull request (every commit of it sticks together), else `repo@sha`."""
    if pull_request is not None:
        return f"{repo}#{pull_request}"
    return f"{repo}@{sha}"


def bucket(key: str) -> float:
    """A number in [0, 100) from sha256(key): the same in every process, run and machine."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") % _BUCKET_MODULUS) / _BUCKET_RESOLUTION


@dataclass
class RoutePlan:
    primary: str | None
    role: Role  # primary, canary or fallback
    shadows: list[str] = field(default_factory=list)
    fallback_from: str | None = None


def canary_ranges(registry: Registry, repo: str | None = None,
                  keep: Callable[[str], bool] | None = None) -> list[tuple[str, float, float]]:
    """(version id, start, end) for every canary, consecutive from 0 in version-id order.

    Shares are clamped so that together they never exceed 100; a canary beyond that gets an
    empty range. With `repo`: only the canaries that take part in its requests
    (`participants`), on a registry already seen as that repository sees it (`in_scope`).
    """
    ranges: list[tuple[str, float, float]] = []
    start = 0.0
    keep = keep or participants(registry, repo)
    for vid in sorted(registry.versions):
        entry = registry.versions[vid]
        if entry.state != VersionState.canary or not keep(vid):
            continue
        share = min(max(entry.traffic_percent, 0.0), 100.0 - start)
        ranges.append((vid, start, start + share))
        start += share
    return ranges


def scope_of(registry: Registry, version_id: str) -> frozenset[str]:
    """The repositories a version is scoped to (`spec.repos`); empty: every repository."""
    entry = registry.versions.get(version_id)
    return frozenset(entry.spec.repos) if entry is not None else frozenset()


def stable_version(registry: Registry, repo: str | None = None,
                   scope: AbstractSet[str] = frozenset()) -> str | None:
    """The stable version that serves `repo` (or every repository of `scope`).

    A task has one global stable version (no `spec.repos`) and at most one stable version per
    repository scope (a learner refit promoted for its repository, say): the narrowest stable
    whose scope covers what is asked serves it, the global one otherwise; ties by version id.
    With neither `repo` nor `scope`: the global stable version (None when there is none, even
    if a scoped one is stable: it serves its repositories only)."""
    need = set(scope) | ({repo} if repo else set())
    ranked = sorted(
        (len(e.spec.repos) if e.spec.repos else _GLOBAL, vid)
        for vid, e in registry.versions.items()
        if e.state == VersionState.stable
        and (not e.spec.repos or (need and need <= set(e.spec.repos))))
    return ranked[0][1] if ranked else None


def stable_of_scope(registry: Registry, scope: AbstractSet[str] | None) -> str | None:
    """The stable version of exactly `scope` (the empty scope: the global one), the first by
    id; `None`: of any scope (the one-stable-per-task rule of schema version 1 events)."""
    return next((v for v in sorted(registry.versions)
                 if registry.versions[v].state == VersionState.stable
                 and (scope is None or frozenset(registry.versions[v].spec.repos) == scope)),
                None)


def same_scope_stable(registry: Registry, version_id: str) -> str | None:
    """The stable version a promotion of `version_id` to stable replaces: the one of exactly
    the same scope (the global stable for a global version)."""
    return stable_of_scope(registry, scope_of(registry, version_id))


def baseline_of(registry: Registry, version_id: str) -> str | None:
    """The stable version a candidate is measured against: the narrowest stable version that
    covers its whole scope (the global one for a global version)."""
    return stable_version(registry, scope=scope_of(registry, version_id))


def _scoped_stables(registry: Registry) -> bool:
    return any(e.spec.repos and e.state == VersionState.stable
               for e in registry.versions.values())


def participants(registry: Registry, repo: str | None) -> Callable[[str], bool]:
    """Which candidates take part in `repo`'s requests: those whose baseline serves it. Every
    one when no stable version is scoped (the common case, and no lookups) or no repo."""
    if repo is None or not _scoped_stables(registry):
        return lambda _vid: True
    serving = stable_version(registry, repo)
    by_scope: dict[frozenset[str], bool] = {}  # one baseline lookup per distinct scope

    def takes_part(vid: str) -> bool:
        scope = scope_of(registry, vid)
        if scope not in by_scope:
            by_scope[scope] = stable_version(registry, scope=scope) == serving
        return by_scope[scope]

    return takes_part


def outside_of(registry: Registry, version_id: str) -> frozenset[str]:
    """The repositories of a candidate's scope (every repository for a global one) whose
    requests it does not take part in: a narrower stable version than its baseline serves
    them. Its measurement leaves them out on both sides."""
    if not _scoped_stables(registry):
        return frozenset()
    base = baseline_of(registry, version_id)
    scope = scope_of(registry, version_id)
    named = {r for e in registry.versions.values()
             if e.state == VersionState.stable for r in e.spec.repos}
    return frozenset(r for r in named
                     if (not scope or r in scope) and stable_version(registry, r) != base)


def scopes_overlap(a: AbstractSet[str], b: AbstractSet[str]) -> bool:
    """Whether two scopes share a repository (an empty scope is every repository)."""
    return not a or not b or bool(set(a) & set(b))


_FALLBACK_RANK = {
    VersionState.stable: 0,
    VersionState.canary: 1,
    VersionState.deprecated: 2,
    VersionState.shadow: 3,
}


def choose_fallback(registry: Registry, exclude: AbstractSet[str], repo: str | None = None
                    ) -> str | None:
    """The version to serve instead of a failing one: stable, then canaries (highest traffic
    first), then deprecated, then shadow; ties by version id. Never quarantined, archived,
    registered or excluded; None when nothing is left. With `repo`: only versions that may see
    its requests (`in_scope`), and among the stable ones the one that serves it first (a
    refit stable for another repository never answers this one)."""
    if repo is not None:
        registry = in_scope(registry, repo)
    own = stable_version(registry, repo)
    candidates = [
        (_FALLBACK_RANK[e.state], vid != own,
         -e.traffic_percent if e.state == VersionState.canary else 0.0, vid)
        for vid, e in registry.versions.items()
        if e.state in _FALLBACK_RANK and vid not in exclude
    ]
    return min(candidates)[3] if candidates else None


def in_scope(registry: Registry, repo: str) -> Registry:
    """The registry as one repository sees it: versions scoped to other repositories
    (`spec.repos` set and not naming this one) are left out."""
    if all(not e.spec.repos or repo in e.spec.repos for e in registry.versions.values()):
        return registry
    return registry.model_copy(update={"versions": {
        vid: e for vid, e in registry.versions.items() if not e.spec.repos or repo in e.spec.repos}})


def plan_route(
    registry: Registry, cohort: str, unavailable: frozenset[str] = frozenset(),
    repo: str | None = None,
) -> RoutePlan:
    """Where a request of this cohort goes.

    The bucket picks a canary (role canary) or the stable version (role primary). If that
    version is unavailable, the best fallback serves (role fallback, fallback_from set). With
    no stable version at all the best available fallback serves (role fallback,
    fallback_from None). Shadows: every available shadow version that is not serving.
    With `repo` given, versions scoped to other repositories are not considered at all, and
    candidates whose baseline does not serve it neither (`participants`).
    """
    if repo is not None:
        registry = in_scope(registry, repo)
    b = bucket(cohort)
    chosen: str | None = None
    role = Role.primary
    keep = participants(registry, repo)
    for vid, start, end in canary_ranges(registry, repo, keep):
        if start <= b < end:
            chosen, role = vid, Role.canary
            break
    if chosen is None:
        chosen = stable_version(registry, repo)

    fallback_from: str | None = None
    if chosen is None:
        primary = choose_fallback(registry, unavailable, repo)
        role = Role.fallback
    elif chosen in unavailable:
        primary = choose_fallback(registry, unavailable | {chosen}, repo)
        role, fallback_from = Role.fallback, chosen
    else:
        primary = chosen

    shadows = sorted(
        vid for vid, e in registry.versions.items()
        if e.state == VersionState.shadow and vid not in unavailable and vid != primary
        and keep(vid)
    )
    return RoutePlan(primary=primary, role=role, shadows=shadows, fallback_from=fallback_from)


def mirrors(registry: Registry, plan: RoutePlan, unavailable: AbstractSet[str] = frozenset(),
            repo: str | None = None) -> list[str]:
    """The versions that get a shadow copy of the request: the plan's shadows, plus the stable
    version (of `repo`) when a canary serves, so the shadow agent can compare the two."""
    out = list(plan.shadows)
    stable = stable_version(registry, repo)
    if plan.role == Role.canary and stable and stable not in unavailable:
        out.append(stable)
    return [v for v in out if v != plan.primary]


def answering_versions(registry: Registry, cohort: str, repo: str | None = None) -> list[str]:
    """Every version that answers a request of this cohort while all are available: the one
    that serves, then its mirrors."""
    plan = plan_route(registry, cohort, repo=repo)
    return ([plan.primary] if plan.primary else []) + mirrors(registry, plan, repo=repo)


def traffic_table(registry: Registry) -> dict[str, float]:
    """Share of primary traffic per version, in percent of the traffic of the repositories it
    serves: canaries their (clamped) share, a stable version 100 minus the shares of the
    canaries beside it, every other version 0. A global version's share is counted as a
    repository no scoped version names sees it; a scoped version's as the first repository
    of its scope where it takes part (`outside_of`) sees it."""
    table = {vid: 0.0 for vid in sorted(registry.versions)}
    home = {vid: _home_repo(registry, vid) for vid in registry.versions}
    views = {""} | {r for r in home.values() if r}
    for repo in sorted(views):
        view = in_scope(registry, repo) if repo else registry.model_copy(update={"versions": {
            v: e for v, e in registry.versions.items() if not e.spec.repos}})
        used = 0.0
        for vid, start, end in canary_ranges(view, repo or None):
            if home[vid] == repo:
                table[vid] = end - start
            used += end - start
        stable = stable_version(view, repo or None)
        if stable is not None and home[stable] == repo:
            table[stable] = max(0.0, 100.0 - used)
    return table


def _home_repo(registry: Registry, vid: str) -> str:
    """The repository whose view a version's share is read from: '' for a global version;
    for a scoped one the first of its repositories where it takes part (a candidate) or
    that it serves (a stable version), else its first."""
    repos = registry.versions[vid].spec.repos
    if not repos:
        return ""
    if registry.versions[vid].state == VersionState.stable:
        return next((r for r in repos if stable_version(registry, r) == vid), repos[0])
    outside = outside_of(registry, vid)
    return next((r for r in repos if r not in outside), repos[0])
