"""learner: refit per-repository change-type models from labelled traffic; every refit is a
new candidate version in shadow (issue 22).

On the leader, every `learner.interval_s` (when `learner.enabled`): count each repository's
labelled commits in ClickHouse (intake's Conventional Commits label on the archived request,
or people's change-type feedback) and its corrections (feedback that relabels a commit intake
had labelled: infra.queries.label_counts); for the repositories with at least
`learner.refit_every` labels and corrections more than their newest refit saw
(agents/learning/live.py),
read the labelled rows as `reviewbus export` does (training_archive, change_type_feedback,
training_rows), fit the global base and the repository's own model in a thread
(agents/learning/refit.py), write the state to a new directory `$REVIEWBUS_HOME/learner/
<version id>`, and register the version `learner-<repo>-n<labels>`, scoped to the repository,
in shadow, with its model card as the register event's evidence. The rotation gates decide
whether it ever serves. Older refits of the repository beyond `keep_per_repo` are archived
when they are still candidates, and the state directories of archived refits are removed.

A refit registered while a worker runs is served at once, through the shared pool topic and
agent `inference._pool`, and on its own topic from the next worker start (streams/registered.py).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.learning import live
from agents.learning.export import training_rows
from agents.learning.learner_store import LearnerStore
from infra import queries
from schemas import LifecycleEvent

from ..context import AppContext, emit, log
from ..metrics import EVENTS, LIFECYCLE


async def _rows(ctx: AppContext, query: queries.Query) -> list[dict[str, Any]]:
    assert ctx.store is not None
    return list((await ctx.store.query(query.sql, query.params)).as_dicts())


def _refit_all(rows: list[dict[str, Any]], due: list[live.Due], cfg: live.LearnerAgentConfig,
               specs: dict[str, Any], corrections: Mapping[str, int] | None = None
               ) -> list[tuple[live.Due, dict[str, Any]]]:
    """The CPU part, off the event loop: examples, one base for the tick, each due
    repository's refit, its track record, its state on disk, its card. A refit is named by
    the store's count (`Due.labels`: labels and corrections), never by the examples it read:
    a window holds requests (a commit sent twice fills two places), feedback may drop a label,
    and a name that fell short of the count would leave the repository due for good."""
    from agents.learning import refit

    examples = refit.examples_from_rows(rows)
    counts = Counter(e.repo for e in examples)
    base_examples = live.newest_per_repo(examples, cfg.base_labels_per_repo)
    base, base_s = None, 0.0
    out = []
    for d in due:
        if not counts.get(d.repo):
            continue  # nothing left to fit on (every label dropped by feedback)
        n = d.labels
        vid = live.version_id(d.repo, n)
        if base is None:
            t0 = time.perf_counter()
            base = refit.fit_base(base_examples, cfg.params)
            base_s = time.perf_counter() - t0
        # the holdout's base: the other repositories as the base saw them, and all of the
        # repository's own window (a little more of it than the served base saw)
        mine = live.newest_per_repo([e for e in examples if e.repo == d.repo],
                                    cfg.max_labels_per_repo)
        window = [e for e in base_examples if e.repo != d.repo] + mine
        result = refit.refit(window, d.repo, params=cfg.params, takeover=cfg.takeover,
                             half=cfg.half, holdout_fraction=cfg.holdout_fraction, base=base)
        result.global_rows = result.manifest["global_rows"] = len(base_examples)
        result.metrics["prequential"] = refit.parent_score(specs.get(d.parent or ""),
                                                           result.examples)
        directory = LearnerStore.default_dir(vid)
        refit.save(result, directory)
        card = live.model_card(
            d.repo, result.examples, global_rows=result.global_rows,
            params=result.manifest["params"], takeover=cfg.takeover, half=cfg.half,
            parent=d.parent, metrics=result.metrics, fit_s=result.fit_s,
            state_dir=str(directory.resolve()), base_fit_s=base_s, labels=n,
            corrections=(corrections or {}).get(d.repo, 0))
        out.append((d, card))
    return out


async def refit_due(ctx: AppContext, sent: set[str] | None = None) -> list[LifecycleEvent]:
    """One pass; the events emitted (refits registered, older refits archived). `sent`: the
    refits this worker registered and the archive events it sent (a tick before the fold
    caught up with them fits and sends nothing again)."""
    sent = set() if sent is None else sent
    cfg = ctx.config.learner
    if ctx.store is None or not cfg.enabled or ctx.registry.frozen:
        return []
    registry = ctx.registry.registry
    task = registry.task
    # Labels and corrections (feedback that relabels a commit intake labelled) both make a
    # repository due: either changes what its model would learn.
    counted = await _rows(ctx, queries.label_counts(task))
    corrections = {r["repo"]: int(r["corrections"] or 0) for r in counted}
    counts = {r["repo"]: int(r["labels"]) + corrections[r["repo"]] for r in counted}
    due = [d for d in live.due_repos(counts, registry, cfg.refit_every)
           if live.version_id(d.repo, d.labels) not in registry.versions
           and live.version_id(d.repo, d.labels) not in sent]
    events: list[LifecycleEvent] = []
    if due:
        # Bounded reads: the due repositories' newest labels for their own models, every
        # other repository's newest for the global base (whose window of a due one is cut
        # from its rows in _refit_all).
        names = [d.repo for d in due]
        own = await _rows(ctx, queries.training_archive(
            task, newest=cfg.max_labels_per_repo, repos=names))
        others = await _rows(ctx, queries.training_archive(
            task, newest=cfg.base_labels_per_repo, exclude=names))
        archive = sorted(own + others, key=lambda r: (r["repo"], r["occurred_at"],
                                                       r["request_id"]))
        feedback = await _rows(ctx, queries.change_type_feedback())
        rows = await asyncio.to_thread(training_rows, archive, feedback)
        specs = {vid: e.spec for vid, e in registry.versions.items()}
        cards = await asyncio.to_thread(_refit_all, rows, due, cfg, specs, corrections)
        # a due repository with nothing left to fit on is not read again until its count moves
        fitted = {d.repo for d, _card in cards}
        sent.update(live.version_id(d.repo, d.labels) for d in due if d.repo not in fitted)
        for d, card in cards:
            spec = live.refit_spec(task, d.repo, int(card["data"]["labels"]), cfg)
            events.append(live.refit_event(registry, spec, card))
            log.warning("learner: %s fitted on %d labels of %s (count %d; base on %d) in %.2f s, "
                        "base %.2f s (holdout %s)", spec.id, card["data"]["fitted_labels"],
                        d.repo, card["data"]["labels"], card["data"]["global_rows"],
                        card["fit_s"], card["base_fit_s"], card["metrics"].get("holdout") or "-")
    events += [e for e in live.archive_all(registry, cfg.keep_per_repo)
               if e.event_id not in sent]
    if events:
        await emit([(ctx.topics.lifecycle, e.version_id, e) for e in events])
        sent.update(e.version_id if e.action.value == "register" else e.event_id for e in events)
        for e in events:
            LIFECYCLE.labels(action=e.action.value).inc()
        EVENTS.labels(agent="learner", outcome="refit").inc(
            sum(1 for e in events if e.action.value == "register"))
    await asyncio.to_thread(_prune, registry)
    return events


def _prune(registry: Any) -> None:
    """Remove the state directories of archived refits (never served again)."""
    for vid in live.archived_refits(registry):
        directory = Path(LearnerStore.default_dir(vid))
        if directory.is_dir():
            shutil.rmtree(directory, ignore_errors=True)
            log.info("learner: removed the state of archived %s", vid)


def register(ctx: AppContext) -> None:
    sent: set[str] = set()  # this worker's registrations (bounded: one per refit)

    @ctx.timer(ctx.config.learner.interval_s, name="learner_refits", on_leader=True)
    async def learner_timer() -> None:
        if ctx.registry.ready.is_set():
            await refit_due(ctx, sent)
