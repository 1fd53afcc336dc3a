"""The live learner agent (issue 22): its pure decisions (agents/learning/live.py), one refit
(agents/learning/refit.py), and a real worker that refits a repository from labelled commits
on the bus and registers the refit as a shadow version scoped to it
(streams/flows/learner.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from agents.backends.learner import LearnerBackend, parse_params
from agents.learning import live, refit
from agents.learning.data import example_from_row
from agents.registry import SkipCode, apply_event
from schemas import (
    ChangedFile,
    CommitEvent,
    LifecycleAction,
    Registry,
    VersionEntry,
    VersionSpec,
    VersionState,
)
from tests import mldata

CFG = live.LearnerAgentConfig(enabled=True, refit_every=50, keep_per_repo=2, takeover=10)

# ---------------------------------------------------------------- pure decisions


def test_version_ids_are_valid_scoped_and_carry_the_label_count():
    assert live.version_id("org/one", 50) == "learner-org__one-n50"
    assert live.labels_of("learner-org__one-n50") == 50
    assert live.labels_of("learner-v1") is None and live.labels_of("minilm-n5") is None
    long = "a-very-long-organisation-name/" + "x" * 80
    vid = live.version_id(long, 123456)
    other = live.version_id(long + "y", 123456)
    assert vid != other and len(vid) <= 63 and live.labels_of(vid) == 123456
    spec = live.refit_spec("code-review", long, 123456, CFG)  # the id passes the pattern
    assert spec.repos == [long] and spec.initial_state == VersionState.shadow
    assert spec.backend == "learner" and parse_params(spec)["takeover"] == 10


def _card(repo: str, labels: int, fit_s: float = 1.0) -> dict:
    return {"data": {"labels": labels}, "repo": repo, "fit_s": fit_s, "parent": None,
            "metrics": {"holdout": {"accuracy": 0.5}}}


def _registered(registry: Registry, repo: str, labels: int) -> Registry:
    spec = live.refit_spec(registry.task, repo, labels, CFG)
    registry, skip = apply_event(registry, live.refit_event(registry, spec, _card(repo, labels)))
    assert skip is None
    return registry


def test_a_repository_is_due_every_refit_every_new_labels():
    reg = Registry(task="code-review")
    assert live.due_repos({"org/a": 49, "org/b": 50}, reg, 50) == [
        live.Due("org/b", 50, 0, None)]
    reg = _registered(reg, "org/b", 50)
    assert live.due_repos({"org/b": 99}, reg, 50) == []
    assert live.due_repos({"org/b": 100}, reg, 50) == [
        live.Due("org/b", 100, 50, "learner-org__b-n50")]
    # another repository's refit does not count for this one
    assert live.due_repos({"org/a": 50}, reg, 50) == [live.Due("org/a", 50, 0, None)]


def test_a_doubled_tick_registers_once():
    reg = Registry(task="code-review")
    spec = live.refit_spec("code-review", "org/b", 50, CFG)
    first = live.refit_event(reg, spec, _card("org/b", 50, fit_s=1.0))
    second = live.refit_event(reg, spec, _card("org/b", 50, fit_s=2.5))  # another fit time
    assert first.event_id == second.event_id == live.refit_event_id("code-review", "org/b", 50)
    assert live.refit_event_id("code-review", "org/b", 51) != first.event_id
    assert first.action == LifecycleAction.register and first.to_state == VersionState.shadow
    assert first.actor == "learner" and first.evidence["model_card"]["data"]["labels"] == 50
    reg, skip = apply_event(reg, first)
    assert skip is None
    _, skip = apply_event(reg, second)
    assert skip is not None and skip.code == SkipCode.duplicate


def test_only_the_newest_refits_stay_and_the_gates_own_the_rest():
    reg = Registry(task="code-review")
    for n in (50, 100, 150, 200):
        reg = _registered(reg, "org/b", n)
    reg = _registered(reg, "org/c", 50)
    # learner-org__b-n100 was promoted by the gates: never archived by the learner
    entry = reg.versions["learner-org__b-n100"]
    reg.versions["learner-org__b-n100"] = entry.model_copy(update={"state": VersionState.canary})
    events = live.archive_all(reg, keep=2)
    assert [e.version_id for e in events] == ["learner-org__b-n50"]
    assert all(e.action == LifecycleAction.archive and e.actor == "learner" for e in events)
    assert events[0].event_id == live.archive_all(reg, keep=2)[0].event_id
    for e in events:
        reg, skip = apply_event(reg, e)
        assert skip is None
    assert live.archived_refits(reg) == ["learner-org__b-n50"]
    # three of org/b left (n100 canary, n150, n200) but the one beyond keep is the canary
    assert live.archive_all(reg, keep=2) == []
    # A version that is not the learner's is never touched, whatever its id looks like.
    spec = VersionSpec(id="learner-org__b-n10", backend="fake", repos=["org/b"])
    reg.versions[spec.id] = VersionEntry(spec=spec, state=VersionState.shadow)
    assert live.archive_all(reg, keep=2) == []


def test_deprecated_refits_beyond_the_one_a_rollback_restores_are_archived():
    """Refits promoted to stable for their repository replace one another: each leaves a
    deprecated refit behind, and only the most recently deprecated can come back."""
    reg = Registry(task="code-review")
    for n in (50, 100, 150, 200):
        reg = _registered(reg, "org/b", n)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for n, state, days in ((50, VersionState.deprecated, 2), (100, VersionState.deprecated, 1),
                           (150, VersionState.stable, 3)):
        vid = live.version_id("org/b", n)
        reg.versions[vid] = reg.versions[vid].model_copy(
            update={"state": state, "since": t0 + timedelta(days=days)})
    # n50 was deprecated after n100 (a rollback to n50 that was replaced again): it stays
    events = live.archive_all(reg, keep=1)
    assert [(e.version_id, e.from_state) for e in events] == [
        ("learner-org__b-n100", VersionState.deprecated)]
    for e in events:
        reg, skip = apply_event(reg, e)
        assert skip is None
    assert live.archive_all(reg, keep=1) == []
    assert reg.versions["learner-org__b-n50"].state == VersionState.deprecated


def test_the_model_card_has_the_data_window():
    rows = mldata.rows(4, repos=("org/one",))
    examples = refit.examples_from_rows(rows)
    card = live.model_card("org/one", examples, global_rows=30, params={"c": 4.0}, takeover=10,
                           half=100.0, parent="learner-org__one-n10", metrics={"holdout": {}},
                           fit_s=0.1234, state_dir="/s")
    assert card["data"]["labels"] == len(rows) == 20
    assert card["data"]["first_author_date"] == rows[0]["author_date"]
    assert card["data"]["last_author_date"] == rows[-1]["author_date"]
    assert card["data"]["by_label"] == {k: 4 for k in mldata.KINDS}
    assert card["own_model"] and card["parent"] == "learner-org__one-n10"
    assert card["fit_s"] == 0.123


# ---------------------------------------------------------------- one refit


def test_a_refit_fits_the_repository_and_its_backend_answers(tmp_path):
    rows = mldata.rows(8, repos=("org/one", "org/two"))  # 20 labels each
    examples = refit.examples_from_rows(rows)
    result = refit.refit(examples, "org/one", takeover=10, holdout_fraction=0.25)
    assert result.global_rows == 40 and len(result.examples) == 20
    entry = result.manifest["repos"]["org/one"]
    assert entry["fitted_on"] == 20 and len(entry["trained_ids"]) == 20
    assert list(result.manifest["repos"]) == ["org/one"] and list(result.own) == ["org/one"]
    hold = result.metrics["holdout"]
    assert hold["n"] == 5 and hold["trained_on"] == 15 and 0.0 <= hold["accuracy"] <= 1.0
    # below takeover: the base alone, no own model
    small = refit.refit(examples, "org/one", takeover=21, holdout_fraction=0)
    assert small.own == {} and small.metrics["holdout"] == {}

    spec = VersionSpec(id="learner-org__one-n20", backend="learner", repos=["org/one"],
                       params={"state_dir": str(tmp_path / "p"), "takeover": 10})
    refit.save(result, tmp_path / "p")
    backend = LearnerBackend(spec)
    answers = backend.predict([e.change for e in result.examples])
    hits = sum(a.change_type.label == e.label for a, e in zip(answers, result.examples))
    assert hits >= 18  # the synthetic kinds are easy: it learnt them
    # the parent's track record: only labels it never saw count
    assert refit.parent_score(spec, result.examples) == {}
    more = refit.examples_from_rows(mldata.rows(10, repos=("org/one", "org/two")))
    score = refit.parent_score(spec, [e for e in more if e.repo == "org/one"])
    assert score["version"] == spec.id and score["n"] == 5
    assert refit.parent_score(None, result.examples) == {}


def test_a_refit_is_named_by_the_store_s_count(tmp_path, monkeypatch):
    """The rows read hold fewer commits than the store counts (a window of requests, commits
    sent twice, corrections that relabel without adding): the version is named by the
    store's count, so the repository is not left due for good below its last refit's."""
    from streams.flows.learner import _refit_all

    monkeypatch.setenv("REVIEWBUS_HOME", str(tmp_path))
    rows = mldata.rows(9, repos=("org/one",))  # 45 commits
    cfg = live.LearnerAgentConfig(enabled=True, takeover=10, max_labels_per_repo=60,
                                  base_labels_per_repo=60, holdout_fraction=0)
    due = [live.Due("org/one", 100, 50, "learner-org__one-n50")]  # 92 labels, 8 corrections
    ((_d, card),) = _refit_all(rows, due, cfg, {}, corrections={"org/one": 8})
    assert (card["data"]["labels"], card["data"]["fitted_labels"]) == (100, 45)
    assert card["data"]["corrections"] == 8
    assert (tmp_path / "learner" / live.version_id("org/one", 100)).is_dir()
    # a due repository with no row left (feedback dropped every label) is not refit
    assert _refit_all([], due, cfg, {}) == []


def test_corrections_alone_make_a_repository_due(store, tmp_path, monkeypatch):
    """refit_due on a real store: 10 labelled commits and a refit fitted on them; no new label,
    so nothing is due, until people correct 5 of intake's labels (refit_every 5): then a refit
    named by labels plus corrections, n15, fitted on the 10 commits as corrected."""
    from types import SimpleNamespace

    from schemas import AcceptedChange, Feedback, NormalizedChange
    from streams.context import RegistryView
    from streams.flows import learner as flow

    monkeypatch.setenv("REVIEWBUS_HOME", str(tmp_path))
    sent_out: list = []

    async def emit(outputs):
        sent_out.extend(outputs)

    monkeypatch.setattr(flow, "emit", emit)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    rows = mldata.rows(2, repos=(REPO,))  # 10 commits, two of each kind
    store.insert_events([
        AcceptedChange(request_id=f"r{i}", task="code-review", source_topic="t", kind="commit",
                       label=row["label"], raw="{}", occurred_at=t0 + timedelta(minutes=i),
                       change=NormalizedChange(repo=REPO, sha=row["sha"], message=row["message"],
                                               diff=row["diff"]))
        for i, row in enumerate(rows)])
    cfg = live.LearnerAgentConfig(enabled=True, refit_every=5, takeover=3, holdout_fraction=0)
    view = RegistryView("code-review")
    view.registry = _registered(Registry(task="code-review"), REPO, 10)

    async def query(sql, params=None):
        return store.query(sql, params)

    ctx = SimpleNamespace(store=SimpleNamespace(query=query), registry=view,
                          config=SimpleNamespace(learner=cfg),
                          topics=SimpleNamespace(lifecycle="lifecycle"))
    assert asyncio.run(flow.refit_due(ctx)) == [] and sent_out == []
    other = {"feature": "bug_fix"}
    store.insert_events([
        Feedback(fingerprint=f"change_type:{other.get(row['label'], 'feature')}",
                 verdict="true_positive", request_id=f"r{i}",
                 occurred_at=t0 + timedelta(days=1, minutes=i))
        for i, row in enumerate(rows[:5])])
    (event,) = asyncio.run(flow.refit_due(ctx))
    assert event.version_id == live.version_id(REPO, 15) and sent_out[0][2] == event
    card = event.evidence["model_card"]
    assert (card["data"]["labels"], card["data"]["corrections"]) == (15, 5)
    assert card["data"]["fitted_labels"] == 10


def test_a_due_repository_with_nothing_to_fit_is_not_read_again(store, tmp_path, monkeypatch):
    """Feedback dropped the only label of a repository: it counts as due (a label and a
    correction), but nothing is left to fit. The next tick only counts; it reads no rows until
    the count moves."""
    from types import SimpleNamespace

    from schemas import AcceptedChange, Feedback, NormalizedChange
    from streams.context import RegistryView
    from streams.flows import learner as flow

    monkeypatch.setenv("REVIEWBUS_HOME", str(tmp_path))
    store.insert_events([
        AcceptedChange(request_id="r0", task="code-review", source_topic="t", kind="commit",
                       label="docs", raw="{}",
                       change=NormalizedChange(repo=REPO, sha="a" * 40, message="x", diff="")),
        Feedback(fingerprint="change_type:docs", verdict="false_positive", request_id="r0")])
    queries_run: list[str] = []

    async def query(sql, params=None):
        queries_run.append(sql)
        return store.query(sql, params)

    view = RegistryView("code-review")
    ctx = SimpleNamespace(store=SimpleNamespace(query=query), registry=view,
                          config=SimpleNamespace(learner=live.LearnerAgentConfig(
                              enabled=True, refit_every=1, takeover=1)),
                          topics=SimpleNamespace(lifecycle="lifecycle"))
    sent: set[str] = set()
    assert asyncio.run(flow.refit_due(ctx, sent)) == []
    assert len(queries_run) == 4  # the count, both archive windows, the feedback
    assert sent == {live.version_id(REPO, 2)}
    assert asyncio.run(flow.refit_due(ctx, sent)) == []
    assert len(queries_run) == 5  # the count alone


def test_rows_intake_would_refuse_are_left_out():
    rows = mldata.rows(2, repos=("org/one",))
    bad = {**rows[0], "id": "bad", "label": "not-a-type"}
    assert [e.id for e in refit.examples_from_rows([bad, *rows])] == [
        example_from_row(r).id for r in rows]


# ---------------------------------------------------------------- a real worker

REPO, OTHER = "org/learn", "org/other"
FED = 25  # labelled commits of REPO before the first refit: 5 of each of mldata's kinds
CONFIG = {
    "task": "code-review",
    "versions": [{"id": "base", "backend": "fake", "initial_state": "stable",
                  "params": {"label": "feature"}}],
    "learner": {"enabled": True, "interval_s": 1.0, "refit_every": 20, "takeover": 10,
                "keep_per_repo": 1, "holdout_fraction": 0.2, "max_labels_per_repo": 30,
                "base_labels_per_repo": 40},
    "quarantine": {"triggers": []},
}


def _commits(rows: list[dict]) -> list[CommitEvent]:
    from agents.learning.data import commit_event

    return [commit_event(r) for r in rows]


def lifecycle(stack) -> list:
    from tests.test_lifecycle_e2e import lifecycle as read

    return list(read(stack))


def _learner_events(stack) -> list:
    return [e for e in lifecycle(stack) if e.actor == "learner"]


def _wait(read, predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        now = read()
        if predicate(now) or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    from .conftest import make_stack

    s = make_stack(tmp_path_factory, broker, CONFIG, "learner_agent")
    yield s
    s.stop()


@pytest.mark.integration
def test_the_learner_agent_refits_a_repository_into_a_shadow_version_that_answers_it(stack):
    from agents.registry import fold
    from infra.kafka import existing_topics
    from streams.services.bus import submit

    rows = mldata.rows(10, repos=(REPO,))  # 50: the first FED now, the rest later
    asyncio.run(submit(stack.settings, _commits(rows[:FED]), wait=True, timeout=120))
    vid = live.version_id(REPO, FED)
    events = _wait(lambda: _learner_events(stack), lambda ev: ev, timeout=90)
    assert [(e.version_id, e.action) for e in events] == [(vid, LifecycleAction.register)], \
        stack.log_tail()
    card = events[0].evidence["model_card"]
    assert card["data"]["labels"] == FED
    assert card["data"]["first_author_date"] == rows[0]["author_date"]
    assert card["data"]["last_author_date"] == rows[FED - 1]["author_date"]
    assert card["data"]["by_label"] == {k: 5 for k in mldata.KINDS}
    assert card["parent"] is None and card["own_model"] is True  # 25 >= takeover 10
    assert card["metrics"]["holdout"]["n"] == 5 and card["metrics"]["prequential"] == {}
    state = stack.home / "learner" / vid
    assert (state / "global.npz").is_file() and (state / "repos" / "org__learn.npz").is_file()
    assert json.loads((state / "state.json").read_text())["repos"][REPO]["fitted_on"] == FED
    reg = fold("code-review", lifecycle(stack))
    assert reg.versions[vid].state == VersionState.shadow
    assert reg.versions[vid].spec.repos == [REPO] and reg.versions[vid].spec.backend == "learner"
    stored = stack.wait_for(f"SELECT evidence FROM lifecycle FINAL WHERE version_id = '{vid}'",
                            lambda r: len(r) == 1)
    assert json.loads(stored[0]["evidence"])["model_card"]["data"]["labels"] == FED

    # Ticks without new labels (interval 1 s) register nothing.
    time.sleep(4)
    assert len(_learner_events(stack)) == 1

    # The running worker serves the refit at once (the shared pool topic, no restart); it
    # answers REPO's commits, not OTHER's.
    from streams import names
    from tests.test_lifecycle_e2e import worker_states

    pid = stack.proc.pid
    assert worker_states(stack, lambda v: v.get(vid) == "shadow").get(vid) == "shadow"
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    others = [CommitEvent(repo=OTHER, sha=hashlib.sha1(f"o{i}".encode()).hexdigest(),
                          message=f"feat: add the {i} command", authored_at=t0 + timedelta(i),
                          diff="+x = 1\n", files=[ChangedFile(path=f"src/c{i}.py", added=1)])
              for i in range(3)]
    asyncio.run(submit(stack.settings, _commits(rows[FED:30]) + others, wait=True, timeout=120))
    by_repo = stack.wait_for(
        "SELECT repo, count() AS n, countIf(status = 'ok') AS ok FROM interactions FINAL "
        f"WHERE version_id = '{vid}' AND role = 'shadow' GROUP BY repo",
        lambda r: sum(x["ok"] for x in r) >= 5, timeout=90)
    assert {x["repo"]: x["ok"] for x in by_repo} == {REPO: 5}, stack.log_tail()
    answered = stack.query(
        "SELECT predicted_label, label FROM interactions FINAL "
        f"WHERE version_id = '{vid}' AND role = 'shadow'")
    assert sum(r["predicted_label"] == r["label"] for r in answered) >= 4  # it learnt the kinds
    # Served by the worker that was running when the refit was registered, through the pool.
    assert stack.proc.poll() is None and stack.proc.pid == pid
    assert "restarting this worker in place" not in (stack.home / "worker.log").read_text()
    topics = asyncio.run(existing_topics(stack.settings, stack.settings.kafka))
    assert names.inference_topic(stack.settings, vid) not in topics
    # 30 labels now: 5 new, below refit_every; still one refit.
    time.sleep(3)
    assert len(_learner_events(stack)) == 1

    # 20 more: a second refit, the first as its parent with its track record on the 25 labels
    # it never saw; keep_per_repo 1 archives the first and removes its state.
    asyncio.run(submit(stack.settings, _commits(rows[30:]), wait=True, timeout=120))
    second = live.version_id(REPO, 50)
    events = _wait(lambda: _learner_events(stack), lambda ev: len(ev) >= 3, timeout=90)
    assert [(e.version_id, e.action) for e in events] == [
        (vid, LifecycleAction.register), (second, LifecycleAction.register),
        (vid, LifecycleAction.archive)], stack.log_tail()
    card = events[1].evidence["model_card"]
    assert card["data"]["labels"] == 50 and card["parent"] == vid
    # read and fitted on the newest 30 (max_labels_per_repo): 25 its parent never saw
    assert card["data"]["fitted_labels"] == 30
    assert card["data"]["first_author_date"] > rows[10]["author_date"]  # the oldest left out
    assert card["metrics"]["prequential"]["version"] == vid
    assert card["metrics"]["prequential"]["n"] == 25
    assert _wait(lambda: state.exists(), lambda there: not there, timeout=10) is False
    assert (stack.home / "learner" / second / "global.npz").is_file()
    assert json.loads((stack.home / "learner" / second / "state.json").read_text())[
        "repos"][REPO]["fitted_on"] == 30
    reg = fold("code-review", lifecycle(stack))
    assert reg.versions[vid].state == VersionState.archived
    assert reg.versions[second].state == VersionState.shadow


def test_a_refit_with_the_label_history_saves_it_and_serves_with_it(tmp_path):
    rows = mldata.rows(8, repos=("org/one", "org/two"))
    examples = refit.examples_from_rows(rows)
    params = {"context_weight": 0.3}
    result = refit.refit(examples, "org/one", params=params, takeover=10, holdout_fraction=0.25)
    entry = result.manifest["repos"]["org/one"]
    mine = [e for e in examples if e.repo == "org/one"]
    assert [h[1] for h in entry["history"]] == [e.label for e in mine]  # oldest first
    assert entry["history"][0][0] == [f.path for f in mine[0].change.files]
    assert result.metrics["holdout"]["n"] == 5
    again = refit.refit(examples, "org/one", params=params, takeover=10, holdout_fraction=0.25)
    assert again.metrics == result.metrics and again.manifest == result.manifest
    refit.save(result, tmp_path / "s")
    spec = VersionSpec(id="learner-org__one-n20", backend="learner", repos=["org/one"],
                       params={"state_dir": str(tmp_path / "s"), "takeover": 10})
    answers = LearnerBackend(spec).predict([e.change for e in mine])
    assert sum(a.change_type.label == e.label for a, e in zip(answers, mine)) >= 18
    # without the context the state has no history to keep
    assert "history" not in refit.refit(examples, "org/one", takeover=10,
                                        holdout_fraction=0).manifest["repos"]["org/one"]
