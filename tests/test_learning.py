"""The learning loop's pure parts and its ClickHouse side (real chDB in tmp_path):
text building and label masking, dataset loading, splits, metrics, export, job events,
per-repository routing scope, registered versions found in the lifecycle history."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from agents.errors import ConfigError, UnknownVersion
from agents.learning.data import (
    authored_before,
    example_from_row,
    load_examples,
    repo_split,
    temporal_split,
    validation_split,
    write_rows,
)
from agents.learning.jobs import adapter_spec, default_version_id, job_event
from agents.learning.metrics import classification_report, mean_report, percentile
from agents.learning.text import (
    FEATURE_NAMES,
    build_text,
    changed_lines,
    features,
    lexical,
    lexical_fields,
    lexical_input,
    text_fields,
)
from agents.routing import plan_route
from infra import queries
from infra.queries import training_jobs
from infra.training_data import export_rows
from schemas import (
    AcceptedChange,
    ChangedFile,
    Feedback,
    JobState,
    LifecycleAction,
    LifecycleEvent,
    NormalizedChange,
    Registry,
    VersionEntry,
    VersionSpec,
    VersionState,
)

DIFF = """diff --git a/docs/guide.md b/docs/guide.md
new file mode 100644
--- /dev/null
+++ b/docs/guide.md
@@ -0,0 +1,3 @@
+# Guide
+fix: this line looks like a prefix but is documentation
+* feat(api): and so does this one
"""


def row(i: int, label: str = "docs", repo: str = "org/a", day: int = 0, **kw) -> dict:
    base = {
        "id": f"{repo}@{i:040x}", "repo": repo, "sha": f"{i:040x}",
        "author_date": (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day)).isoformat(),
        "subject": "docs(guide): write the guide",
        "message": "write the guide\n\n* fix: typo in the intro\n- feat!: new section\nplain line",
        "diff": DIFF, "files": [{"path": "docs/guide.md", "added": 3, "deleted": 0}],
        "label": label,
    }
    base.update(kw)
    return base


# ---------------------------------------------------------------- text and masking


def test_every_prefix_is_masked_in_message_body_and_diff():
    ex = example_from_row(row(1))
    text = build_text(ex.change)
    assert ex.label == "docs"
    assert ex.change.message.startswith("write the guide")  # intake masked the subject
    for leak in ("docs(guide):", "fix:", "feat!:", "feat(api):"):
        assert leak not in text, leak
    assert "* typo in the intro" in text and "- new section" in text and "plain line" in text
    assert "this line looks like a prefix" in text  # the diff's content stays, minus the prefix
    assert "stats: 1 files (1 docs), +3 -0" in text
    assert "paths: docs/guide.md" in text


def test_changed_lines_keeps_only_changes_and_file_markers():
    diff = ("diff --git a/x.py b/x.py\nindex 1..2\n--- a/x.py\n+++ b/x.py\n@@ -1,2 +1,2 @@\n"
            " ctx\n-old  line\n+new line\n")
    assert changed_lines(diff) == "file: x.py\n- old line\n+ new line"
    assert len(changed_lines("+" + "x" * 10_000, limit=100)) == 100


def test_features_describe_the_change():
    ex = example_from_row(row(2))
    f = dict(zip(FEATURE_NAMES, features(ex.change)))
    assert len(FEATURE_NAMES) == len(features(ex.change))
    assert f["frac_docs"] == 1.0 and f["frac_code"] == 0.0
    assert f["frac_new_files"] == 1.0  # status "added" read from the diff's new file mode
    assert f["added_share"] == 1.0
    assert all(0.0 <= v <= 1.5 for v in f.values())


def test_lexical_is_deterministic_and_normalized():
    a, b = lexical("Bump urllib3 from 1.26 to 2.0"), lexical("bump URLLIB3 from 1.26 to 2.0")
    assert a == b and a
    assert abs(sum(v * v for v in a.values()) - 1.0) < 1e-9
    assert lexical("") == {}


def test_lexical_fields_hash_each_field_apart():
    """The same word in the message and in the diff are different features; the old scheme
    ("text", adapters trained before fields) is still one bag over build_text."""
    ex = example_from_row(row(1))
    message, summary, diff = text_fields(ex.change)
    assert build_text(ex.change) == "\n".join([message, summary, diff])
    fields = lexical_fields(text_fields(ex.change))
    assert fields == lexical_fields(text_fields(ex.change))
    assert abs(sum(v * v for v in fields.values()) - 1.0) < 1e-9  # 3 fields, each 1/sqrt(3)
    in_message = lexical_fields(text_fields(ex.change.model_copy(update={"message": "zebra",
                                                                          "diff": ""})))
    in_diff = lexical_fields(text_fields(ex.change.model_copy(update={"message": "",
                                                                       "diff": "+++ b/x\n+zebra"})))
    shared = set(in_message) & set(in_diff)  # only the summary field may overlap
    empty = ex.change.model_copy(update={"message": "", "diff": ""})
    assert shared <= set(lexical_fields(text_fields(empty)))
    assert lexical_input(text_fields(ex.change), 1 << 14, "text") == lexical(build_text(ex.change))
    with pytest.raises(ValueError, match="lexical scheme"):
        lexical_input(text_fields(ex.change), 16, "words")


# ---------------------------------------------------------------- data and splits


def test_rows_without_a_known_label_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="label"):
        example_from_row(row(1, label="wip"))
    path = tmp_path / "bad.jsonl"
    path.write_text("{not json\n")
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        load_examples(path)
    # the line of the first bad row, and why: no label, or a row intake refuses
    path.write_text(json.dumps(row(1)) + "\n\n" + json.dumps({"message": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:3: label None is not one of bug_fix, "):
        load_examples(path)
    path.write_text(json.dumps(row(1)) + "\n" + json.dumps(row(2, id="bad id")) + "\n")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: event_id must be printable"):
        load_examples(path)
    with pytest.raises(ConfigError, match="limit must be at least 1, got 0"):
        load_examples(path, limit=0)


def test_load_examples_gz_and_repo_filter(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    assert write_rows(path, [row(i, repo="org/a" if i % 2 else "org/b") for i in range(6)]) == 6
    with gzip.open(path, "rt") as fh:
        assert len(fh.readlines()) == 6
    assert [e.repo for e in load_examples(path, repos=["org/b"])] == ["org/b"] * 3
    assert len(load_examples(path, limit=2)) == 2
    with pytest.raises(ConfigError, match="no labelled rows"):
        load_examples(path, repos=["org/none"])


def test_temporal_split_orders_by_utc_author_date():
    rows = [row(1, day=3), row(2, day=1), row(3, day=2), row(4, day=0)]
    # 2024-01-02T23:00-05:00 is 2024-01-03T04:00Z: after day 2, before day 3
    rows.append(row(5, author_date="2024-01-02T23:00:00-05:00"))
    exs = [example_from_row(r) for r in rows]
    train, test = temporal_split(exs, 0.6)
    assert [e.id[-1] for e in train] == ["4", "2", "3"]
    assert [e.id[-1] for e in test] == ["5", "1"]
    with pytest.raises(ConfigError):
        temporal_split(exs, 1.0)


def test_authored_before_compares_utc_author_dates():
    exs = [example_from_row(row(i, day=i)) for i in range(4)]
    # 2024-01-02T23:00-05:00 is 2024-01-03T04:00Z: after day 2 (00:00Z), before day 3
    late = example_from_row(row(9, author_date="2024-01-02T23:00:00-05:00"))
    assert [e.id[-1] for e in authored_before(exs, late)] == ["0", "1", "2"]
    assert authored_before(exs, exs[0]) == []  # strictly before: not the same instant


def test_validation_split_stratified_deterministic_and_marked_splits():
    exs = [example_from_row(row(i, label="docs" if i < 20 else "test")) for i in range(40)]
    train, val = validation_split(exs, 0.25, seed=1)
    again = validation_split(exs, 0.25, seed=1)
    assert [e.id for e in val] == [e.id for e in again[1]]
    assert sorted(e.label for e in val) == ["docs"] * 5 + ["test"] * 5
    assert not {e.id for e in train} & {e.id for e in val}
    marked = [example_from_row(row(i, split="val" if i < 3 else "train")) for i in range(10)]
    t, v = validation_split(marked, 0.5)
    assert len(v) == 3 and len(t) == 7


def test_repo_split_is_deterministic_and_disjoint():
    repos = [f"org/r{i}" for i in range(8)]
    train, val = repo_split(repos)
    assert len(val) == 2 and not set(train) & set(val)
    assert repo_split(list(reversed(repos))) == (train, val)


# ---------------------------------------------------------------- metrics


def test_classification_report_numbers():
    truth = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    r = classification_report(truth, pred, labels=("a", "b", "c"))
    assert r["accuracy"] == 0.6 and r["n"] == 5
    assert r["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert r["per_class"]["b"]["f1"] == 0.8  # p 2/3, r 1
    assert r["per_class"]["c"]["f1"] == 0.0
    assert r["macro_f1"] == round((0.5 + 0.8 + 0.0) / 3, 4)
    assert r["confusion"]["c"] == {"a": 1, "b": 0, "c": 0}
    # a label only predicted (never true) counts in the macro average as 0
    assert classification_report(["a"], ["b"], labels=("a", "b"))["macro_f1"] == 0.0


def test_percentile_and_means():
    assert percentile([], 50) == 0.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 95) == 95
    m = mean_report({"x": {"n": 2, "accuracy": 1.0, "macro_f1": 0.5, "per_class": {"a": {"f1": 1.0}}},
                     "y": {"n": 4, "accuracy": 0.5, "macro_f1": 0.3, "per_class": {"a": {"f1": 0.0}}}})
    assert (m["n"], m["accuracy"], m["macro_f1"]) == (6, 0.75, 0.4)
    assert m["per_class"]["a"] == {"f1": 0.5, "repos": 2}


# ---------------------------------------------------------------- routing scope


def test_scoped_version_is_served_only_to_its_repositories():
    versions = {
        "stable": VersionEntry(spec=VersionSpec(id="stable", backend="fake"), state=VersionState.stable),
        "global": VersionEntry(spec=VersionSpec(id="global", backend="fake"), state=VersionState.shadow),
        "mine": VersionEntry(spec=VersionSpec(id="mine", backend="fake", repos=["org/a"]),
                             state=VersionState.shadow),
        "mycanary": VersionEntry(spec=VersionSpec(id="mycanary", backend="fake", repos=["org/a"]),
                                 state=VersionState.canary, traffic_percent=100.0),
    }
    registry = Registry(task="code-review", versions=versions)
    for_a = plan_route(registry, "org/a#1", repo="org/a")
    assert (for_a.primary, for_a.shadows) == ("mycanary", ["global", "mine"])
    for_b = plan_route(registry, "org/b#1", repo="org/b")
    assert (for_b.primary, for_b.shadows) == ("stable", ["global"])
    # without a repository nothing changes (old callers)
    assert plan_route(registry, "org/b#1").primary == "mycanary"


# ---------------------------------------------------------------- ClickHouse: export, jobs, registered


def accepted(i: int, repo: str, label: str | None, at: datetime,
             authored: datetime | None = None, request_id: str | None = None) -> AcceptedChange:
    change = NormalizedChange(repo=repo, sha=f"{i:040x}", authored_at=authored,
                              message=f"change {i}", diff=DIFF,
                              files=[ChangedFile(path="docs/guide.md", status="added", added=3,
                                                 deleted=0)])
    return AcceptedChange(request_id=request_id or f"req-{i}", task="code-review", source_topic="t",
                          kind="commit", label=label, change=change, raw="{}", occurred_at=at)


def test_the_learner_reads_each_repository_s_newest_labels_only(store):
    """infra.queries.training_archive with `newest`: a refit reads a bounded window of the
    archive however long its history (the learner agent's two reads)."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    store.insert_events([accepted(i, f"org/r{i % 3}", "docs" if i != 4 else None,
                                  t0 + timedelta(hours=i)) for i in range(30)])

    def read(**kw) -> dict[str, list[str]]:
        q = queries.training_archive("code-review", **kw)
        out: dict[str, list[str]] = {}
        for r in store.query(q.sql, q.params).as_dicts():
            out.setdefault(r["repo"], []).append(r["request_id"])
        return out

    every = read()
    assert {r: len(ids) for r, ids in every.items()} == {"org/r0": 10, "org/r1": 9, "org/r2": 10}
    newest = read(newest=3)
    assert newest == {r: ids[-3:] for r, ids in every.items()}  # the newest, oldest first
    assert newest["org/r0"] == ["req-21", "req-24", "req-27"]
    assert read(newest=2, repos=["org/r1"]) == {"org/r1": ["req-25", "req-28"]}
    assert set(read(newest=2, exclude=["org/r1"])) == {"org/r0", "org/r2"}


def test_feedback_on_a_request_outside_the_window_still_labels_its_commit(store):
    """Commit 0 was sent twice (a push, then its pull request); the window holds only the
    newer request, the person's change-type feedback was given on the older one."""
    from agents.learning.export import training_rows

    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    events = [accepted(0, "org/a", "docs", t0, request_id="req-0-push")]
    events += [accepted(i, "org/a", "docs", t0 + timedelta(hours=i)) for i in range(1, 6)]
    events += [accepted(0, "org/a", "docs", t0 + timedelta(hours=9), request_id="req-0-pr"),
               Feedback(fingerprint="change_type:feature", verdict="true_positive",
                        request_id="req-0-push")]
    store.insert_events(events)

    def rows_of(q):
        return store.query(q.sql, q.params).as_dicts()

    window = rows_of(queries.training_archive("code-review", newest=3))
    assert "req-0-push" not in {r["request_id"] for r in window}
    feedback = rows_of(queries.change_type_feedback())
    assert [(f["request_id"], f["repo"], f["sha"]) for f in feedback] == [
        ("req-0-push", "org/a", f"{0:040x}")]
    labels = {r["sha"]: r["label"] for r in training_rows(window, feedback)}
    assert labels[f"{0:040x}"] == "feature"
    # an unarchived request's feedback maps to no commit, as before
    assert training_rows(window, [{**feedback[0], "request_id": "gone", "repo": "",
                                   "sha": ""}])[0]["label"] == "docs"


def test_corrections_count_towards_a_refit(store):
    """label_counts: a request intake labelled whose latest change-type feedback relabels it or
    drops its label is one correction, however often it was given; feedback that confirms
    intake's label, was reverted, names no change type or drops a label the request does not
    have is none; feedback on an unlabelled request adds a label."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    events = [accepted(i, "org/a", "docs" if i not in (4, 5) else None, t0 + timedelta(hours=i))
              for i in range(8)]
    events += [accepted(9, "org/b", "docs", t0)]

    def fb(request_id: str, label: str, verdict: str, minute: int) -> Feedback:
        return Feedback(fingerprint=f"change_type:{label}", verdict=verdict,
                        request_id=request_id, occurred_at=t0 + timedelta(days=1, minutes=minute))

    events += [
        fb("req-0", "feature", "true_positive", 1), fb("req-0", "feature", "true_positive", 2),
        fb("req-1", "docs", "false_positive", 1),  # drops intake's label
        fb("req-2", "docs", "true_positive", 1),  # confirms it
        fb("req-3", "test", "true_positive", 1), fb("req-3", "docs", "true_positive", 2),
        fb("req-6", "feature", "false_positive", 1),  # a label it does not have
        fb("req-7", "bogus", "true_positive", 1),  # not a change type
        fb("req-4", "test", "true_positive", 1),  # labels an unlabelled request
    ]
    store.insert_events(events)
    q = queries.label_counts("code-review")
    got = {r["repo"]: (r["labels"], r["corrections"]) for r in store.query(q.sql, q.params)
           .as_dicts()}
    # org/a: 6 labelled by intake + req-4 by feedback; corrections: req-0 and req-1
    assert got == {"org/a": (7, 2), "org/b": (1, 0)}


def test_a_refit_window_keeps_each_repository_s_newest():
    from agents.learning import live, refit
    from tests import mldata

    rows = mldata.rows(6, repos=("org/one", "org/two"))
    examples = refit.examples_from_rows(rows)
    kept = live.newest_per_repo(examples, 4)
    for repo in ("org/one", "org/two"):
        mine = [e for e in examples if e.repo == repo]
        assert [e.id for e in kept if e.repo == repo] == [e.id for e in mine[-4:]]
    assert live.newest_per_repo(examples, 0) == examples
    with pytest.raises(ValueError, match="below takeover"):
        live.LearnerAgentConfig(takeover=100, max_labels_per_repo=50)
    assert live.LearnerAgentConfig(takeover=100, max_labels_per_repo=0).max_labels_per_repo == 0


def test_export_labels_feedback_and_split_by_repository(store, tmp_path):
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    events = [accepted(i, f"org/r{i % 4}", "docs" if i != 5 else None, t0 + timedelta(hours=i))
              for i in range(12)]
    events += [
        Feedback(fingerprint="change_type:feature", verdict="true_positive", request_id="req-5"),
        Feedback(fingerprint="change_type:test", verdict="true_positive", request_id="req-1"),
        Feedback(fingerprint="change_type:docs", verdict="false_positive", request_id="req-2"),
        Feedback(fingerprint="change_type:nonsense", verdict="true_positive", request_id="req-3"),
    ]
    # commit 7 sent again later (its pull request): one row, the newest request, labelled by
    # the feedback given on the first one
    events += [accepted(7, "org/r3", "docs", t0 + timedelta(hours=20), request_id="req-7-pr"),
               Feedback(fingerprint="change_type:refactor", verdict="true_positive",
                        request_id="req-7")]
    store.insert_events(events)
    rows = export_rows(store, "code-review")
    labels = {r["id"]: r["label"] for r in rows}
    assert len(rows) == 11  # req-2 dropped by feedback, req-5 labelled by feedback only
    assert "req-7" not in labels and labels["req-7-pr"] == "refactor"
    assert labels["req-5"] == "feature" and labels["req-1"] == "test" and labels["req-3"] == "docs"
    assert "req-2" not in labels
    val_repos = {r["repo"] for r in rows if r["split"] == "val"}
    train_repos = {r["repo"] for r in rows if r["split"] == "train"}
    assert len(val_repos) == 1 and not val_repos & train_repos
    since = export_rows(store, "code-review", since=t0 + timedelta(hours=10))
    assert sorted(r["id"] for r in since) == ["req-10", "req-11", "req-7-pr"]
    # the export reads back as a dataset, masked and labelled
    path = tmp_path / "export.jsonl"
    write_rows(path, rows)
    exs = load_examples(path)
    assert len(exs) == 11 and {e.split for e in exs} == {"train", "val"}
    assert {e.change.files[0].status for e in exs} == {"added"}


def test_export_dates_rows_by_author_date_and_holds_out_the_newest_authored(store):
    # Submitted in one go (occurred_at one second apart) but written years apart, newest
    # first: a temporal split must follow the author dates, not the arrival order.
    sent = datetime(2026, 1, 1, tzinfo=UTC)
    written = [datetime(2020 - i, 6, 1, tzinfo=timezone(timedelta(hours=2))) for i in range(19)]
    events = [accepted(i, "org/one", "docs", sent + timedelta(seconds=i), authored=at)
              for i, at in enumerate(written)]
    events.append(accepted(19, "org/one", "docs", sent + timedelta(seconds=19)))  # no author date
    store.insert_events(events)
    rows = {r["id"]: r for r in export_rows(store, "code-review")}
    assert rows["req-0"]["author_date"] == "2020-06-01T00:00:00+02:00"
    assert rows["req-18"]["author_date"] == "2002-06-01T00:00:00+02:00"
    assert rows["req-19"]["author_date"].startswith("2026-01-01T00:00:19")  # falls back to arrival
    val = sorted(r["id"] for r in rows.values() if r["split"] == "val")
    assert val == ["req-0", "req-1", "req-19"]  # the newest 15 % of 20 rows by author date


def test_job_events_are_idempotent_and_latest_state_wins(store):
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    common = dict(task="code-review", data="d.jsonl", out="/tmp/x", repos=["org/a"])
    store.insert_events([job_event("j1", JobState.queued, occurred_at=t0, **common)])
    store.insert_events([job_event("j1", JobState.queued, occurred_at=t0, **common),
                         job_event("j1", JobState.running, occurred_at=t0 + timedelta(seconds=1), **common),
                         job_event("j2", JobState.queued, occurred_at=t0 + timedelta(seconds=2), **common)])
    store.insert_events([job_event("j1", JobState.succeeded, occurred_at=t0 + timedelta(seconds=9),
                                   metrics={"val": {"macro_f1": 0.5}}, version_id="v-j1", **common)])
    assert store.query("SELECT count() FROM training_jobs FINAL").rows[0][0] == 4
    jobs = training_jobs("code-review")
    rows = {r["job_id"]: r for r in store.query(jobs.sql, jobs.params).as_dicts()}
    assert rows["j1"]["state"] == "succeeded" and rows["j1"]["version_id"] == "v-j1"
    assert rows["j2"]["state"] == "queued" and rows["j1"]["repos"] == ["org/a"]
    assert json.loads(rows["j1"]["metrics"]) == {"val": {"macro_f1": 0.5}}


def test_adapter_spec_and_default_ids(tmp_path):
    spec = adapter_spec("ct-lora-x", tmp_path, task="code-review", base=None, repos=["org/a"],
                        train_params={"epochs": 2}, job_id="abc")
    assert spec.backend == "transformers" and spec.repos == ["org/a"]
    assert spec.initial_state == VersionState.shadow
    assert spec.params == {"adapter": str(tmp_path.resolve()), "train": {"epochs": 2}}
    assert default_version_id("0123456789", ["googleapis/python-storage"]) == \
        "ct-lora-python-storage-01234567"
    assert default_version_id("0123456789", []) == "ct-lora-01234567"
    with pytest.raises(ConfigError):
        adapter_spec("bad id!", tmp_path, task="t", base=None, repos=[], train_params={}, job_id="j")


def test_registered_versions_come_from_the_lifecycle_history(store):
    from infra.config_file import load_config
    from streams.registered import registered_specs

    config = load_config()
    new = VersionSpec(id="ct-lora-new", backend="transformers", params={"adapter": "x"},
                      repos=["org/a"])
    gone = VersionSpec(id="ct-lora-gone", backend="transformers")
    events = [LifecycleEvent(task=config.task, version_id=s.id, action=LifecycleAction.register,
                             to_state=VersionState.shadow, actor="test", spec=s.model_dump(mode="json"))
              for s in (new, gone)]
    events.append(LifecycleEvent(task=config.task, version_id="ct-lora-gone",
                                 action=LifecycleAction.archive, from_state=VersionState.shadow,
                                 to_state=VersionState.archived, actor="test"))
    store.insert_events(events)
    specs = registered_specs(store, config)
    assert [s.id for s in specs] == ["ct-lora-new"]
    assert specs[0].repos == ["org/a"]
    # a fine-tuned candidate can be rebenchmarked by replay; an archived one cannot
    from infra.readback import registry_from_store
    from streams.services.bus import check_version
    from streams.services.replay import replay_targets

    targets = replay_targets(registry_from_store(store, config.task), config)
    assert targets == [v.id for v in config.versions] + ["ct-lora-new"]
    with pytest.raises(UnknownVersion, match="ct-lora-gone"):
        check_version("ct-lora-gone", targets)


def test_eval_finds_registered_versions_and_names_them_when_the_id_is_unknown(tmp_path, monkeypatch):
    from agents.settings import Settings
    from infra.config_file import load_config
    from infra.store import open_store
    from streams.services.learning import find_spec

    monkeypatch.setenv("REVIEWBUS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REVIEWBUS_CONFIG", raising=False)
    monkeypatch.delenv("REVIEWBUS_CLICKHOUSE", raising=False)
    settings = Settings()
    task = load_config().task
    new = VersionSpec(id="ct-lora-new", backend="transformers", params={"adapter": "x"})
    with open_store(settings) as store:
        store.insert_events([LifecycleEvent(task=task, version_id=new.id,
                                            action=LifecycleAction.register,
                                            to_state=VersionState.shadow, actor="test",
                                            spec=new.model_dump(mode="json"))])
    assert find_spec(settings, "ct-lora-new").params == {"adapter": "x"}
    assert find_spec(settings, "analyzers-v1").backend == "analyzers"  # the file's
    with pytest.raises(ConfigError, match=r"versions file: analyzers-v1, .*; registered: ct-lora-new;"):
        find_spec(settings, "nope")


def test_versions_table_shows_each_version_s_scope():
    from streams.services.reports import versions_rows

    spec = VersionSpec(id="ct-lora-a", backend="transformers", repos=["org/a", "org/b"])
    registry = Registry(task="code-review", versions={
        "a1": VersionEntry(spec=VersionSpec(id="a1", backend="analyzers"), state=VersionState.stable),
        spec.id: VersionEntry(spec=spec, state=VersionState.shadow)})
    assert [(r["version_id"], r["scope"]) for r in versions_rows(registry)] == [
        ("a1", "all"), ("ct-lora-a", "org/a, org/b")]
