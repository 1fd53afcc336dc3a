"""streams/flows/intake.py accept_and_route: intake routes in its own hop; a routing bug still
archives the change (the AcceptedChange is published, so the end-to-end repair routes it
later) and dead-letters the input under "router" with the reason."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agents.settings import Limits
from bench import load
from schemas import AcceptedChange
from streams.flows import intake


def fake_ctx():
    dlq: list = []

    def dead_letter_outputs(failed, agent):
        dlq.extend((agent, error) for _, error in failed)
        return [("topic:dlq", None, error) for _, error in failed]

    topics = SimpleNamespace(accepted="topic:accepted", input_kind_by_topic={})
    ctx = SimpleNamespace(topics=topics, config=SimpleNamespace(task="code-review"),
                          limits=Limits(), dead_letter_outputs=dead_letter_outputs)
    return ctx, dlq


def commit_event():
    _, _, value = load.commit_events(1, "t")[0]
    return SimpleNamespace(value=value, message=SimpleNamespace(topic="commits", timestamp=None))


def test_an_accepted_change_is_published_with_its_routes(monkeypatch):
    monkeypatch.setattr(intake, "route", lambda ctx, a: [("topic:inference.v1", "k", "req")])
    ctx, dlq = fake_ctx()
    out = asyncio.run(intake.accept_and_route(ctx, commit_event()))
    assert [t for t, _, _ in out] == ["topic:accepted", "topic:inference.v1"]
    assert isinstance(out[0][2], AcceptedChange) and out[0][2].label == "feature"
    assert dlq == []


def test_a_routing_bug_archives_the_change_and_dead_letters_under_router(monkeypatch):
    def broken(ctx, accepted):
        raise KeyError("no such version")

    monkeypatch.setattr(intake, "route", broken)
    ctx, dlq = fake_ctx()
    out = asyncio.run(intake.accept_and_route(ctx, commit_event()))
    assert [t for t, _, _ in out] == ["topic:accepted", "topic:dlq"]  # sent with the batch
    assert dlq == [("router", "routing failed: KeyError('no such version')")]
