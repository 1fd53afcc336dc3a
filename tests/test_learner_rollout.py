"""A learner refit walks shadow -> canary -> stable by the rotation gates, for its own
repository only, served by two workers of one app while they run (issue 22; real broker,
real chDB; one consumer group, one home, one store: tests/test_rebalance.py's Fleet).

The global stable version `base` (fake) answers "feature" on every change. The learner agent
(on the leader) refits two repositories on 40 labelled commits each (mldata's five kinds) and
registers `learner-org__learn-n40` and `learner-org__worse-n40`, each scoped to its
repository, in shadow:

- org/learn's labels are right: its refit answers its commits far better than `base`
  (about 1.0 against 0.2), so the gates promote it on the numbers they measure, step by step,
  to stable **for org/learn**; org/other is served by `base` throughout, which stays stable.
- org/worse's labels were written with the kinds permuted: on its new commits (all
  `feat:` changes, which `base` gets right) its refit is always wrong. The gates fail it and it
  stays in shadow.

Registered while the workers run, both refits are served through the shared pool topic
`inference._pool`, whose partitions the group splits between the two workers: every request
routed to a refit (as a shadow copy, a canary, the stable version) is answered once, by the
worker that owns its partition.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import urllib.request
from collections import Counter

import orjson
import pytest
import yaml

from agents.learning import live
from agents.learning.data import commit_event
from agents.registry import fold, fold_annotated
from agents.routing import bucket, cohort_key
from infra.kafka import read_to_end
from schemas import CommitEvent, LifecycleEvent, ReviewFindings
from streams import names
from streams.services.bus import submit
from tests import mldata

from .test_lifecycle_e2e import lifecycle, poll
from .test_rebalance import PARTITIONS, Fleet

pytestmark = pytest.mark.integration

LEARN, WORSE, OTHER = "org/learn", "org/worse", "org/other"
TRAIN = 40  # labelled commits of a repository before its refit (8 of each kind)
MIN_SAMPLES = 6
GATES = {"min_samples": MIN_SAMPLES, "max_error_rate": 0.5, "max_latency_ratio": None,
         "min_accuracy_delta": 0.0, "min_agreement": None}
CONFIG = {
    "task": "code-review",
    "versions": [{"id": "base", "backend": "fake", "initial_state": "stable",
                  "params": {"label": "feature"}}],
    # refit_every = TRAIN: each repository is refit once (fewer than TRAIN more labels come);
    # half 0: a refit answers with its repository's own model alone.
    "learner": {"enabled": True, "interval_s": 1.0, "refit_every": TRAIN, "takeover": 10,
                "half": 0, "keep_per_repo": 2, "holdout_fraction": 0},
    "rotation": {"interval_s": 1.0, "window_s": 3600, "settle_s": 0.5, "canary_steps": [50],
                 "record_holds": True, "record_every_s": 3600,
                 "shadow_to_canary": GATES, "canary_step": GATES, "canary_to_stable": GATES},
    "quarantine": {"triggers": []},
    "inference": {"batch_size": 8, "batch_wait_s": 0.02},
}
VID = live.version_id(LEARN, TRAIN)
BAD = live.version_id(WORSE, TRAIN)
PERMUTED = dict(zip(mldata.KINDS, [*list(mldata.KINDS)[1:], next(iter(mldata.KINDS))]))
TYPE = {kind: ctype for kind, (ctype, *_rest) in mldata.KINDS.items()}


def labelled(repo: str, tag: str, per_kind: int, *, kinds: tuple[str, ...] = (),
             permute: bool = False) -> list[CommitEvent]:
    """mldata's rows as the commits CI would send, with shas of their own (`tag`); `kinds`:
    only those; `permute`: each written with the next kind's Conventional Commits type."""
    out = []
    for i, row in enumerate(mldata.rows(per_kind, repos=(repo,))):
        if kinds and row["label"] not in kinds:
            continue
        sha = hashlib.sha1(f"{repo}|{tag}|{i}".encode()).hexdigest()
        row = {**row, "sha": sha, "id": f"{repo}@{sha}"}
        if permute:
            wrong = TYPE[PERMUTED[row["label"]]]
            row["subject"] = wrong + row["subject"][row["subject"].index(":"):]
            row["message"] = row["message"].replace(f"* {TYPE[row['label']]}:", f"* {wrong}:")
        out.append(commit_event(row))
    return out


def canary_bucket(c: CommitEvent) -> bool:
    """Whether the router sends this commit to a 50 % canary of its repository (the first
    half of the buckets: one canary in scope)."""
    return bucket(cohort_key(c.repo, c.pull_request, c.sha)) < 50


def served(fleet: Fleet, events: list[CommitEvent]) -> dict[str, tuple[str, str]]:
    """Submit and wait: request id -> (version that served it, role)."""
    found = asyncio.run(submit(fleet.settings, events, wait=True, timeout=120))
    return {f.request_id: (f.version_id, f.role.value) for f in found}


def states(fleet: Fleet) -> dict[str, str]:
    reg = fold("code-review", lifecycle(fleet))
    return {v: e.state.value for v, e in reg.versions.items()}


def tails(fleet: Fleet) -> str:
    return "\n".join(f"--- worker {i}\n{fleet.tail(i, 20)}" for i in (0, 1))


def wait_state(fleet: Fleet, vid: str, state: str, timeout: float = 30.0) -> None:
    """Until the lifecycle topic's fold has vid in state and both workers' routers agree
    (each routes the commits of the partitions it owns)."""
    now = poll(lambda: states(fleet), lambda s: s.get(vid) == state, timeout, 0.3)
    assert now.get(vid) == state, (now, tails(fleet))
    for i in (0, 1):
        seen = poll(lambda i=i: (fleet.health(i) or {}).get("versions", {}),
                    lambda v: v.get(vid) == state, 30.0, 0.2)
        assert seen.get(vid) == state, (i, seen, fleet.tail(i))


def applied(fleet: Fleet) -> list[LifecycleEvent]:
    _, notes = fold_annotated("code-review", lifecycle(fleet))
    return [e for e, skipped in notes if skipped is None]


def gate(evidence: dict, name: str) -> dict:
    return next(g for g in evidence["gates"] if g["name"] == name)


def pool_partitions(fleet: Fleet) -> list[set[int]]:
    """The partitions of the pool topic each worker owns (its /health)."""
    pool = names.pool_topic(fleet.settings)
    return [{int(p.rsplit(":", 1)[1]) for p in (fleet.health(i) or {}).get("partitions", [])
             if p.rsplit(":", 1)[0] == pool} for i in (0, 1)]


def answered_by(fleet: Fleet, index: int) -> dict[str, int]:
    """Requests each learner refit got answered by this worker's inference (its /metrics)."""
    info = fleet.info(index)
    assert info is not None, fleet.tail(index)
    with urllib.request.urlopen(info["web_url"] + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for version, count in re.findall(r'^reviewbus_inference_seconds_count\{[^}]*'
                                     r'version="(learner-[^"]+)"[^}]*\} ([0-9.e+]+)$', text, re.M):
        out[version] += int(float(count))
    return dict(out)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, broker):
    f = Fleet(tmp_path_factory.mktemp("learner_rollout"), broker, reconcile=False, size=2)
    (f.home / "versions.yaml").write_text(yaml.safe_dump(CONFIG))
    try:
        f.start(0)
        f.start(1)  # it waits for the first to host the store
        f.wait_healthy([0, 1])
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def rollout(fleet):
    """Labelled history, then traffic stage by stage: what served each commit, per stage."""
    # The group has settled: the pool topic's partitions are split between the two workers.
    split = poll(lambda: pool_partitions(fleet),
                 lambda s: all(s) and set().union(*s) == set(range(PARTITIONS))
                 and not s[0] & s[1], 60.0, 0.5)
    assert all(split) and not split[0] & split[1], (split, tails(fleet))
    out: dict = {"split": split}
    # Each repository is refit on its labelled history and registered in shadow, scoped to it.
    train = labelled(LEARN, "train", TRAIN // 5) + labelled(WORSE, "train", TRAIN // 5,
                                                            permute=True)
    out["train"] = served(fleet, train)
    wait_state(fleet, VID, "shadow", timeout=60)
    wait_state(fleet, BAD, "shadow")
    # Shadow stage: org/learn's new commits get a mirrored copy to its refit; org/worse's
    # feature commits to its own; org/other's to neither.
    out["shadow"] = {"learn": labelled(LEARN, "a", 2)[:8],
                     "worse": labelled(WORSE, "a", 8, kinds=("feature",)),
                     "other": [labelled(OTHER, f"o{i}", 1, kinds=("feature",))[0]
                               for i in range(4)]}
    out["shadow_answers"] = served(fleet, [c for cs in out["shadow"].values() for c in cs])
    wait_state(fleet, VID, "canary")
    # Canary 50 %: the commits of org/learn in the canary's half of the buckets.
    pool = labelled(LEARN, "b", 10)
    out["canary"] = {"canary": [c for c in pool if canary_bucket(c)][:8],
                     "primary": [c for c in pool if not canary_bucket(c)][:8],
                     "other": [labelled(OTHER, f"p{i}", 1, kinds=("feature",))[0]
                               for i in range(4)]}
    out["canary_answers"] = served(fleet, [c for cs in out["canary"].values() for c in cs])
    wait_state(fleet, VID, "stable")
    out["states"] = states(fleet)
    out["stable"] = {"learn": labelled(LEARN, "c", 1),
                     "other": [labelled(OTHER, f"q{i}", 1, kinds=("feature",))[0]
                               for i in range(4)],
                     "worse": labelled(WORSE, "c", 1, kinds=("feature",))}
    out["stable_answers"] = served(fleet, [c for cs in out["stable"].values() for c in cs])
    return out


def test_a_learner_refit_is_promoted_by_the_gates_for_its_repository_only(fleet, rollout):
    assert set(rollout["train"].values()) == {("base", "primary")}
    reg = fold("code-review", lifecycle(fleet))
    assert reg.versions[VID].spec.repos == [LEARN] and reg.versions[BAD].spec.repos == [WORSE]
    # In shadow nothing serves but base.
    assert set(rollout["shadow_answers"].values()) == {("base", "primary")}
    # Canary 50 %: org/learn's commits in the canary's half of the buckets are served by the
    # refit, the others by base; org/other's only ever by base.
    stage, answers = rollout["canary"], rollout["canary_answers"]
    assert {answers[c.event_id] for c in stage["canary"]} == {(VID, "canary")}
    assert {answers[c.event_id] for c in stage["primary"] + stage["other"]} == {
        ("base", "primary")}
    # Stable for org/learn; base stays the stable version of every other repository.
    final = rollout["states"]
    assert final[VID] == "stable" and final["base"] == "stable", final
    stage, answers = rollout["stable"], rollout["stable_answers"]
    assert {answers[c.event_id] for c in stage["learn"]} == {(VID, "primary")}
    assert {answers[c.event_id] for c in stage["other"] + stage["worse"]} == {
        ("base", "primary")}
    # The refit never answered another repository's commit, in any role.
    rows = poll(lambda: fleet.query(
        "SELECT version_id, repo, count() AS n FROM interactions FINAL WHERE version_id IN "
        f"('{VID}', '{BAD}') GROUP BY version_id, repo ORDER BY version_id, repo"),
        lambda r: sum(x["n"] for x in r) >= 8 + 8 + 8 + 5 + 1, 30.0, 0.5)
    assert {(x["version_id"], x["repo"]): x["n"] for x in rows} == {
        (VID, LEARN): 8 + 8 + 5, (BAD, WORSE): 8 + 1}

    # Promoted by the rotation agent on what it measured, never by fiat.
    moves = [e for e in applied(fleet) if e.version_id == VID and e.action.value == "promote"]
    assert [(e.from_state.value, e.to_state.value, e.traffic_percent, e.actor) for e in moves] \
        == [("shadow", "canary", 50.0, "rotation"), ("canary", "stable", 0.0, "rotation")]
    for e in moves:
        ev = e.evidence
        assert ev["outcome"] == "pass" and ev["stable_version"] == "base"
        acc = gate(ev, "accuracy_delta")
        assert acc["outcome"] == "pass" and acc["interval"][0] >= 0.0
        assert acc["candidate"]["estimate"] >= 0.8  # it learnt org/learn's kinds
        # base measured on org/learn's commits alone (its "feature" is right on about a
        # fifth of them); on org/other's and org/worse's feature commits it is always right
        assert acc["stable"]["estimate"] <= 0.4, acc
        assert f"'{LEARN}'" in ev["sql"]["stable"]
        assert ev["samples"]["candidate"]["labelled"] >= MIN_SAMPLES


def test_a_worse_refit_fails_its_gates_and_stays_in_shadow(fleet, rollout):
    # One version moves per tick: it is judged on a tick where org/learn's refit does not move.
    def failed_holds() -> list[dict]:
        return [e.evidence for e in lifecycle(fleet) if e.version_id == BAD
                and e.action.value == "hold" and e.evidence.get("outcome") == "fail"]

    failed = poll(failed_holds, bool, 15.0, 0.3)
    bad = [e for e in lifecycle(fleet) if e.version_id == BAD]
    assert failed, ([e.evidence.get("why") for e in bad], tails(fleet))
    assert [e.action.value for e in bad if e.action.value != "hold"] == ["register"]
    assert states(fleet)[BAD] == "shadow"
    acc = gate(failed[-1], "accuracy_delta")
    assert acc["outcome"] == "fail" and acc["interval"][1] < 0.0
    assert acc["candidate"]["estimate"] == 0.0 and acc["stable"]["estimate"] == 1.0
    assert failed[-1]["stable_version"] == "base"


def test_both_workers_serve_the_refits_registered_at_run_time_once_per_request(fleet, rollout):
    settings = fleet.settings
    # Every request routed to a refit, whatever its role: (request id, version) -> role.
    routed = {(c.event_id, VID): "shadow" for c in rollout["shadow"]["learn"]}
    routed |= {(c.event_id, BAD): "shadow"
               for c in rollout["shadow"]["worse"] + rollout["stable"]["worse"]}
    routed |= {(c.event_id, VID): "canary" for c in rollout["canary"]["canary"]}
    routed |= {(c.event_id, VID): "primary" for c in rollout["stable"]["learn"]}
    # Exactly one answer of each in ClickHouse (none lost, none twice) ...
    rows = poll(lambda: fleet.query(
        "SELECT request_id, version_id, role, count() AS n, countIf(status = 'ok') AS ok "
        f"FROM interactions WHERE version_id IN ('{VID}', '{BAD}') "
        "GROUP BY request_id, version_id, role"),
        lambda r: len(r) >= len(routed), 30.0, 0.5)
    got = {(x["request_id"], x["version_id"]): (x["role"], x["n"], x["ok"]) for x in rows}
    assert got == {key: (role, 1, 1) for key, role in routed.items()}, tails(fleet)
    # ... and on the results topic.
    results = Counter((head["request_id"], head["version_id"]) for head in map(
        orjson.loads, asyncio.run(read_to_end(settings, settings.kafka,
                                              names.topic(settings, "results"))))
        if head.get("version_id") in (VID, BAD))
    assert results == Counter(dict.fromkeys(routed, 1))
    # What users read: one finding per request, from the version that served it.
    served_by = {(c.event_id, VID) for c in rollout["canary"]["canary"]
                 + rollout["stable"]["learn"]}
    published = Counter(
        (f.request_id, f.version_id) for f in map(
            ReviewFindings.model_validate_json,
            asyncio.run(read_to_end(settings, settings.kafka, names.topic(settings, "findings"))))
        if f.version_id == VID)
    assert published == Counter(dict.fromkeys(served_by, 1))
    # Each worker answered the requests of the pool partitions it owns; together, all.
    per_worker = [answered_by(fleet, i) for i in (0, 1)]
    assert all(w.get(VID) for w in per_worker), (per_worker, rollout["split"])
    assert sum(w.get(VID, 0) for w in per_worker) == sum(1 for _r, v in routed if v == VID)
    assert sum(w.get(BAD, 0) for w in per_worker) == sum(1 for _r, v in routed if v == BAD)
    # The learner ran on the leader only; its states are read from the shared home.
    assert (fleet.home / "learner" / VID / "global.npz").is_file()
