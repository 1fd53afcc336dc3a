"""streams/flows/results.py: one consumer of `results` for the health judge and the shadow join;
each part fails alone, dead-lettering the result under its own name, as two agents did."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest

from streams.flows import results


def fake_ctx():
    dlq: list = []

    async def send_to_dlq(event, error, agent):
        dlq.append((agent, error))

    return SimpleNamespace(send_to_dlq=send_to_dlq), dlq


def event(value: dict | bytes):
    return SimpleNamespace(value=value if isinstance(value, bytes) else orjson.dumps(value))


def test_each_result_is_read_once_and_given_to_both_parts(monkeypatch):
    seen: list = []

    async def judge(ctx, head):
        seen.append(("judge", head["request_id"]))

    def join(ctx, head, raw):
        seen.append(("join", head["request_id"], raw))
        return ["comparison"]

    monkeypatch.setattr(results, "judge", judge)
    monkeypatch.setattr(results, "join_result", join)
    ctx, dlq = fake_ctx()
    ev = event({"request_id": "r1"})
    assert asyncio.run(results.read_result(ctx, ev)) == ["comparison"]
    assert seen == [("judge", "r1"), ("join", "r1", ev.value)] and dlq == []


@pytest.mark.parametrize("broken", ["quarantine", "shadow"])
def test_a_part_that_raises_dead_letters_under_its_name_and_the_other_goes_on(monkeypatch,
                                                                                broken):
    judged: list = []

    async def judge(ctx, head):
        if broken == "quarantine":
            raise RuntimeError("judge bug")
        judged.append(head["request_id"])

    def join(ctx, head, raw):
        if broken == "shadow":
            raise RuntimeError("join bug")
        return ["comparison"]

    monkeypatch.setattr(results, "judge", judge)
    monkeypatch.setattr(results, "join_result", join)
    ctx, dlq = fake_ctx()
    out = asyncio.run(results.read_result(ctx, event({"request_id": "r1"})))
    assert [agent for agent, _ in dlq] == [broken]
    assert "bug" in dlq[0][1]
    if broken == "quarantine":
        assert out == ["comparison"]
    else:
        assert out == [] and judged == ["r1"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]"])
def test_an_unreadable_result_raises_for_the_batch_loop_to_dead_letter(raw):
    ctx, _ = fake_ctx()
    with pytest.raises(ValueError):
        asyncio.run(results.read_result(ctx, event(raw)))
