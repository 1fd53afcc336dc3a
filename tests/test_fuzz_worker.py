"""Fuzzing through the real broker and worker: a few hundred hostile messages on both input
topics and garbage on every internal topic. Zero crashes; each rejected input in the DLQ with
the reason intake gives for it (the pure function is the oracle) and its exact bytes; every
valid one processed. Then `reviewbus dlq list`, and `reviewbus dlq replay` after a fix (a
limit raised) gets the rejected ones served."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from agents.errors import InvalidEvent
from agents.intake import accept_input
from agents.settings import Limits
from infra.kafka import start_producer
from streams import names
from streams.cli import main as cli

from .conftest import Stack
from .fuzzgen import seeded_batch

pytestmark = pytest.mark.integration

N = 300
LIMIT_ENV = {"REVIEWBUS_LIMIT_MAX_MESSAGE_BYTES": "200000",
             "REVIEWBUS_LIMIT_MAX_DIFF_CHARS": "50000", "REVIEWBUS_LIMIT_MAX_FILES": "3"}
LIMITS = Limits(max_message_bytes=200_000, max_diff_chars=50_000, max_files=3)
CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": "st", "backend": "fake", "initial_state": "stable",
         "params": {"label": "feature", "findings": 1}},
        {"id": "sh", "backend": "fake", "initial_state": "shadow", "params": {"label": "chore"}},
    ],
    "rotation": {"interval_s": 3600},
    "inference": {"batch_size": 16, "batch_wait_s": 0.02},
}
INTERNAL = ("accepted", "results", "failures", "feedback", "lifecycle", "healing",
            "shadow-comparisons", "inference.st")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = Stack(tmp_path_factory.mktemp("fuzz-worker"), broker, CONFIG)
    s.env.update(LIMIT_ENV)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sent(stack):
    """Produce the batch; (topic, partition, offset) -> (family, raw, oracle verdict)."""
    settings = stack.settings
    batch = seeded_batch(seed=4, n=N)
    inputs = [names.topic(settings, "commits"), names.topic(settings, "review-requests")]
    kinds = {inputs[0]: "commit", inputs[1]: "review_request"}

    async def produce() -> dict:
        producer = await start_producer(settings, settings.kafka)
        out = {}
        try:
            for i, (family, raw) in enumerate(batch):
                topic = inputs[i % 2]
                meta = await (await producer.send(topic, value=raw, key=b"fuzz"))
                out[(topic, meta.partition, meta.offset)] = (family, raw, kinds[topic])
            for short in INTERNAL:
                for garbage in (b"{not json", b"\xff\x00", b'{"schema_version": 7}'):
                    await (await producer.send(names.topic(settings, short), value=garbage))
        finally:
            await producer.stop()
        return out

    produced = asyncio.run(produce())
    verdicts = {}
    for where, (family, raw, kind) in produced.items():
        try:
            accepted = accept_input(raw, source_topic=where[0], kind=kind, task="code-review",
                                    limits=LIMITS)
            verdicts[where] = (family, raw, None, accepted)
        except InvalidEvent as exc:
            verdicts[where] = (family, raw, str(exc), None)
    return verdicts


def test_every_rejected_input_is_in_the_dlq_with_its_reason(stack, sent):
    rejected = {w: v for w, v in sent.items() if v[2] is not None}
    accepted = {w: v for w, v in sent.items() if v[2] is None}
    assert len(rejected) >= 150 and len(accepted) >= 40  # both sides are exercised
    families = {v[0] for v in rejected.values()}
    assert families >= {"random_bytes", "truncated", "wrong_types", "huge_fields",
                        "deep_nesting", "schema_versions", "invalid_utf8", "too_many_files"}
    inputs = tuple({w[0] for w in sent})
    topics_sql = ", ".join(f"'{t}'" for t in inputs)
    rows = stack.wait_for(
        f"SELECT source_topic, partition, offset, error, payload, payload_encoding, "
        f"payload_size FROM dead_letters FINAL WHERE source_topic IN ({topics_sql})",
        lambda r: len(r) >= len(rejected), timeout=120)
    assert len(rows) == len(rejected)
    for row in rows:
        family, raw, reason, _ = rejected[(row["source_topic"], row["partition"], row["offset"])]
        assert row["error"] == f"intake: {reason}", family
        body = (base64.b64decode(row["payload"]) if row["payload_encoding"] == "base64"
                else row["payload"].encode())
        assert body == raw and row["payload_size"] == len(raw)


def test_every_valid_input_is_processed(stack, sent):
    accepted = [v[3] for v in sent.values() if v[2] is None]
    named = {a.request_id for a in accepted if a.request_id.startswith(("fz", "many"))}
    rows = stack.wait_for(
        "SELECT version_id, count() AS n FROM interactions FINAL GROUP BY version_id "
        "ORDER BY version_id", lambda r: sum(x["n"] for x in r) >= 2 * len(accepted),
        timeout=120)
    assert rows == [{"version_id": "sh", "n": len(accepted)},
                    {"version_id": "st", "n": len(accepted)}]
    ids = {r["request_id"] for r in stack.query(
        "SELECT request_id FROM interactions FINAL WHERE version_id = 'st'")}
    assert named <= ids


def test_garbage_on_internal_topics_is_dead_lettered_and_the_worker_lives(stack, sent):
    wanted = {names.topic(stack.settings, t) for t in INTERNAL}
    rows = stack.wait_for(
        "SELECT source_topic, count() AS n FROM dead_letters FINAL GROUP BY source_topic",
        lambda r: wanted <= {x["source_topic"] for x in r}, timeout=90)
    by_topic = {r["source_topic"]: r["n"] for r in rows}
    for topic in wanted:
        assert by_topic[topic] >= 3, topic  # every garbage message, by at least one agent
    assert stack.proc.poll() is None
    health = stack.query("SELECT 1 AS ok")  # the worker's store proxy answers
    assert health == [{"ok": 1}]


def test_dlq_list_and_replay_after_a_fix(stack, sent, capsys, monkeypatch):
    for key, value in stack.env.items():
        monkeypatch.setenv(key, value)
    fixed = [accept_fixed(raw) for family, raw, _, _ in sent.values()
             if family == "too_many_files"]
    too_many = [a for a in fixed if a is not None]
    assert cli(["dlq", "list", "--source", "commits", "--limit", "1000",
                "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed and all(r["source_topic"].endswith(".commits") for r in listed)
    assert any("REVIEWBUS_LIMIT_MAX_FILES" in r["error"] for r in listed)
    assert cli(["dlq", "list", "--error", "not valid JSON", "--limit", "5"]) == 0
    table = capsys.readouterr().out
    assert "source_topic" in table and "not valid JSON" in table
    assert cli(["dlq", "replay"]) == 1  # replaying everything is never a default
    assert "never a default" in capsys.readouterr().err

    # The fix: a higher file limit. Restart the worker with it, then replay those letters.
    stack.env["REVIEWBUS_LIMIT_MAX_FILES"] = "50"
    stack.stop()
    stack.start()
    monkeypatch.setenv("REVIEWBUS_LIMIT_MAX_FILES", "50")
    assert cli(["dlq", "replay", "--error", "REVIEWBUS_LIMIT_MAX_FILES", "--limit", "1000"]) == 0
    out = capsys.readouterr().out
    assert "replayed" in out
    ids = ", ".join(f"'{a.request_id}'" for a in too_many)
    assert too_many
    stack.wait_for(f"SELECT count() AS n FROM interactions FINAL WHERE version_id = 'st' "
                   f"AND request_id IN ({ids})", lambda r: r[0]["n"] == len(too_many),
                   timeout=120)


def accept_fixed(raw: bytes):
    """The AcceptedChange under the fixed (raised) file limit, or None."""
    try:
        return accept_input(raw, source_topic="t", kind="commit", task="code-review",
                            limits=Limits(max_message_bytes=200_000, max_diff_chars=50_000,
                                          max_files=50))
    except InvalidEvent:
        return None
