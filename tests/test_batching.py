"""streams/batching.py: a batch's outputs are all on the broker before any source is acked,
sources are acked in the order taken, and one bad event is dead-lettered with its reason while
the rest of the batch goes on (no broker: fake stream, topics and context)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agents.settings import Settings
from streams.batching import run_batches

from .fake_topics import FakeTopic


class AckLaterTopic(FakeTopic):
    """Each record's ack is a future the 'broker' resolves later, like aiokafka's."""

    def __init__(self, log: list) -> None:
        super().__init__()
        self.log, self.pending = log, []

    async def send(self, key, value, force):
        fut = asyncio.get_running_loop().create_future()
        self.pending.append(fut)

        def acked() -> None:
            self.log.append(("acked-by-broker", value))
            fut.set_result(None)

        asyncio.get_running_loop().call_later(0.01, acked)
        self.log.append(("sent", value))
        return fut


class FakeStream:
    def __init__(self, batches: list[list], log: list) -> None:
        self.batches, self.log, self.taken = batches, log, []

    async def noack_take(self, n, within):
        self.taken.append((n, within))
        for batch in self.batches:
            yield batch

    async def ack(self, event) -> None:
        self.log.append(("ack", event.value))


def event(value: bytes, offset: int):
    return SimpleNamespace(value=value, message=SimpleNamespace(topic="in", partition=0,
                                                                offset=offset, key=None))


def fake_ctx(log: list):
    dlq: list = []

    async def send_to_dlq(ev, error, agent):
        dlq.append((ev.value, error, agent))
        log.append(("dlq", ev.value))

    return SimpleNamespace(settings=Settings(batch_max=3, batch_within_s=0.005),
                           send_to_dlq=send_to_dlq), dlq


def test_acks_follow_every_broker_ack_and_keep_the_order_taken():
    log: list = []
    out = AckLaterTopic(log)
    ctx, dlq = fake_ctx(log)
    batches = [[event(b"a", 0), event(b"b", 1), event(b"c", 2)], [event(b"d", 3)]]
    stream = FakeStream(batches, log)

    def handle(ev):
        return [(out, None, ev.value + b"1"), (out, None, ev.value + b"2")]

    asyncio.run(run_batches(ctx, stream, "t", handle))
    assert stream.taken == [(3, 0.005)]  # the settings' N and T, with a `within`
    assert dlq == []
    acks = [v for kind, v in log if kind == "ack"]
    assert acks == [b"a", b"b", b"c", b"d"]  # in the order taken
    first_ack = log.index(("ack", b"a"))
    # every output of the first batch was on the broker before its first source was acked
    broker = [v for kind, v in log[:first_ack] if kind == "acked-by-broker"]
    assert {b"a1", b"a2", b"b1", b"b2", b"c1", b"c2"} <= set(broker)
    # ... and the second batch was taken and sent meanwhile, not after those acks
    assert log.index(("sent", b"d1")) < log.index(("acked-by-broker", b"a1"))
    assert log.index(("ack", b"d")) > log.index(("acked-by-broker", b"d2"))
    # ... and all six were sent before the first broker ack came back: sent without awaiting
    sends = [i for i, (kind, _) in enumerate(log) if kind == "sent"][:6]
    assert max(sends) < log.index(next(x for x in log if x[0] == "acked-by-broker"))


def test_one_bad_event_is_dead_lettered_with_its_reason_and_the_batch_goes_on():
    log: list = []
    out = AckLaterTopic(log)
    ctx, dlq = fake_ctx(log)
    stream = FakeStream([[event(b"a", 0), event(b"bad", 1), event(b"c", 2)]], log)

    def handle(ev):
        if ev.value == b"bad":
            raise ValueError("not a commit")
        return [(out, None, ev.value + b"!")]

    asyncio.run(run_batches(ctx, stream, "intake", handle,
                            reason=lambda exc: f"invalid: {exc}", expected=(ValueError,)))
    assert dlq == [(b"bad", "invalid: not a commit", "intake")]
    assert [v for kind, v in log if kind == "acked-by-broker"] == [b"a!", b"c!"]
    assert [v for kind, v in log if kind == "ack"] == [b"a", b"bad", b"c"]


def test_a_refused_batch_runs_on_send_error_and_is_still_acked_in_order():
    log: list = []
    ctx, dlq = fake_ctx(log)

    class Refusing(FakeTopic):
        async def send(self, key, value, force):
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(OSError("broker gone"))
            return fut

    refused: list = []

    async def on_send_error(events, exc):
        refused.extend((e.value, repr(exc)) for e in events)

    stream = FakeStream([[event(b"a", 0), event(b"b", 1)]], log)
    asyncio.run(run_batches(ctx, stream, "router", lambda ev: [(Refusing(), None, ev.value)],
                            on_send_error=on_send_error))
    assert [v for v, _ in refused] == [b"a", b"b"]
    assert [v for kind, v in log if kind == "ack"] == [b"a", b"b"]


def test_outputs_handed_over_before_a_send_raised_are_not_left_unretrieved():
    """A send that raises midway (a full buffer, a closed producer) fails the batch; the futures
    of the records already handed over fail later, and nobody awaits them: their exceptions
    must still be retrieved, or asyncio logs "Future exception was never retrieved"."""
    import gc

    import pytest

    from streams.context import send_all

    from .fake_topics import FakeTopic

    class Flaky(FakeTopic):
        def __init__(self) -> None:
            super().__init__()
            self.futures: list = []

        async def send(self, key, value, force):
            if value == b"c":
                raise OSError("buffer full")
            fut = asyncio.get_running_loop().create_future()
            self.futures.append(fut)
            return fut

    async def run() -> list:
        unretrieved: list = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: unretrieved.append(ctx))
        topic = Flaky()
        with pytest.raises(OSError, match="buffer full"):
            await send_all([(topic, None, v) for v in (b"a", b"b", b"c")])
        assert len(topic.futures) == 2
        for fut in topic.futures:
            fut.set_exception(OSError("broker gone"))
        await asyncio.sleep(0)  # the done callbacks run
        topic.futures.clear()
        gc.collect()
        return unretrieved

    assert asyncio.run(run()) == []


def test_the_producer_is_refused_under_exactly_once():
    import pytest
    from faust.types.enums import ProcessingGuarantee

    from infra.faust_compat import FaustIncompatible, aiokafka_producer

    app = SimpleNamespace(conf=SimpleNamespace(processing_guarantee=ProcessingGuarantee.EXACTLY_ONCE),
                          producer=SimpleNamespace(_ensure_producer=lambda: "producer"))
    with pytest.raises(FaustIncompatible, match="at-least-once"):
        aiokafka_producer(app)
    app.conf.processing_guarantee = ProcessingGuarantee.AT_LEAST_ONCE
    assert aiokafka_producer(app) == "producer"


class Acks:
    """A stream that only records acks (InOrderAcks' side of Faust's stream)."""

    def __init__(self) -> None:
        self.acked: list = []

    async def ack(self, event) -> None:
        self.acked.append(event)


def test_in_order_acks_wait_for_each_batch_and_for_every_batch_before_it():
    """The second batch's outputs are acked by the broker first: its sources still wait until
    the first batch's are acked, and each batch's only once all its outputs are."""
    from streams.batching import InOrderAcks

    async def run() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        stream = Acks()
        acks = InOrderAcks(stream, "t", depth=4)
        first, second = [loop.create_future(), loop.create_future()], [loop.create_future()]
        await acks.hand_over(["a", "b"], first, None)
        await acks.hand_over(["c"], second, None)
        second[0].set_result(None)
        first[0].set_result(None)
        await asyncio.sleep(0.01)
        seen = list(stream.acked)  # first[1] still on its way: nothing acked yet
        first[1].set_result(None)
        await acks.drain()
        return seen, stream.acked

    seen, acked = asyncio.run(run())
    assert seen == []
    assert acked == ["a", "b", "c"]


def test_in_order_acks_hold_the_hop_once_depth_batches_wait():
    from streams.batching import InOrderAcks

    async def run() -> tuple[bool, bool, list]:
        loop = asyncio.get_running_loop()
        stream = Acks()
        acks = InOrderAcks(stream, "t", depth=2)
        futures = [loop.create_future() for _ in range(3)]
        await acks.hand_over([1], [futures[0]], None)
        await acks.hand_over([2], [futures[1]], None)
        third = asyncio.ensure_future(acks.hand_over([3], [futures[2]], None))
        await asyncio.sleep(0.01)
        held = not third.done()  # two batches wait for the broker: the hop waits too
        futures[0].set_result(None)
        await asyncio.sleep(0.01)
        released = third.done()
        for future in futures[1:]:
            future.set_result(None)
        await acks.drain()
        return held, released, stream.acked

    held, released, acked = asyncio.run(run())
    assert held and released
    assert acked == [1, 2, 3]


def test_a_refused_batch_is_handed_to_on_send_error_before_its_acks_and_the_next_batch_waits():
    from streams.batching import InOrderAcks

    async def run() -> list:
        loop = asyncio.get_running_loop()
        stream = Acks()
        log: list = []

        async def on_send_error(events, exc):
            await asyncio.sleep(0.01)  # a dead letter's round trip
            log.append(("refused", list(events), str(exc)))

        stream.acked = log
        acks = InOrderAcks(stream, "t")
        refused, fine = loop.create_future(), loop.create_future()
        await acks.hand_over(["a"], [refused], on_send_error)
        await acks.hand_over(["b"], [fine], on_send_error)
        fine.set_result(None)
        refused.set_exception(OSError("broker gone"))
        await acks.drain()
        return log

    assert asyncio.run(run()) == [("refused", ["a"], "broker gone"), "a", "b"]


def test_a_stopped_hop_leaves_the_batches_still_on_their_way_unacked():
    """At a stop (cancel) a batch whose outputs the broker has not acked is not acked: Faust
    does not commit it and the next owner reads it again; a batch already acked stays so."""
    from streams.batching import InOrderAcks

    async def run() -> list:
        loop = asyncio.get_running_loop()
        stream = Acks()
        acks = InOrderAcks(stream, "t")
        done, pending = loop.create_future(), loop.create_future()
        done.set_result(None)
        await acks.hand_over(["a"], [done], None)
        await asyncio.sleep(0.01)
        await acks.hand_over(["b"], [pending], None)
        await acks.close()
        pending.set_result(None)
        await asyncio.sleep(0.01)
        return stream.acked

    assert asyncio.run(run()) == ["a"]


def test_a_failing_hook_after_a_batch_is_logged_and_the_batch_still_goes_out(caplog):
    log: list = []
    out = AckLaterTopic(log)
    ctx, _ = fake_ctx(log)
    stream = FakeStream([[event(b"a", 0)], [event(b"b", 1)]], log)

    def hook() -> None:
        raise RuntimeError("metrics broke")

    asyncio.run(run_batches(ctx, stream, "results", lambda ev: [(out, None, ev.value)],
                            after=hook))
    assert [v for kind, v in log if kind == "acked-by-broker"] == [b"a", b"b"]
    assert [v for kind, v in log if kind == "ack"] == [b"a", b"b"]
    assert "the hook after a batch failed" in caplog.text


def test_a_batch_that_could_not_be_acked_leaves_every_later_batch_unacked_and_is_raised():
    """No gap below acked offsets: when acking a batch fails (a stream broken under it), the
    batches after it are not acked either, and the hop hears of it (drain raises)."""
    import pytest

    from streams.batching import InOrderAcks, Unacked

    class Breaking(Acks):
        async def ack(self, event) -> None:
            if event == "b":
                raise RuntimeError("stream gone")
            await super().ack(event)

    async def run() -> list:
        loop = asyncio.get_running_loop()
        stream = Breaking()
        acks = InOrderAcks(stream, "t")
        for batch in (["a"], ["b", "b2"], ["c"]):
            done = loop.create_future()
            done.set_result(None)
            await acks.hand_over(batch, [done], None)
        with pytest.raises(RuntimeError, match="stream gone"):
            await acks.drain()
        with pytest.raises(Unacked):  # the batch after it
            await acks.drain()
        return stream.acked

    assert asyncio.run(run()) == ["a"]


def test_strict_acks_leave_a_batch_unacked_when_its_dead_letters_fail_too_and_the_rest_with_it():
    """Intake's mode: outputs refused and the dead letters refused too (a producer stopped
    under the hop) mean the batch is not committed, nor any after it; drain raises."""
    import pytest

    from streams.batching import InOrderAcks, Unacked

    async def run() -> tuple[list, list]:
        loop = asyncio.get_running_loop()
        committed: list = []
        dead: list = []

        async def on_send_error(events, exc):
            dead.extend(events)
            raise OSError("dead letters refused too")

        def commit(name):
            async def ack():
                committed.append(name)
            return ack

        acks = InOrderAcks(None, "intake", strict=True)
        ok, refused, later = (loop.create_future() for _ in range(3))
        ok.set_result(None)
        refused.set_exception(OSError("producer stopped"))
        later.set_result(None)
        await acks.hand_over(["a"], [ok], on_send_error, ack=commit("a"))
        await acks.hand_over(["b"], [refused], on_send_error, ack=commit("b"))
        await acks.hand_over(["c"], [later], on_send_error, ack=commit("c"))
        with pytest.raises(OSError, match="dead letters refused too"):
            await acks.drain()
        with pytest.raises(Unacked):
            await acks.drain()
        return committed, dead

    committed, dead = asyncio.run(run())
    assert committed == ["a"] and dead == ["b"]


def test_strict_acks_commit_a_refused_batch_once_its_dead_letters_are_out():
    from streams.batching import InOrderAcks

    async def run() -> list:
        loop = asyncio.get_running_loop()
        log: list = []

        async def on_send_error(events, exc):
            log.append(("dead", list(events)))

        async def ack():
            log.append("committed")

        acks = InOrderAcks(None, "intake", strict=True)
        refused = loop.create_future()
        refused.set_exception(OSError("refused"))
        await acks.hand_over(["x"], [refused], on_send_error, ack=ack)
        await acks.drain()
        return log

    assert asyncio.run(run()) == [("dead", ["x"]), "committed"]
