"""infra/faust_compat.py patch 5: Faust's consumer hands each fetched record to the streams
inline until the delivery has to wait (no task per record, one loop turn after each); a
delivery that waits goes on under mode's original race against a flow suspension, which still
abandons it. Driven on a real mode Service with the patched method, and checked installed."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from mode import Service

from infra import faust_check, faust_compat
from infra.faust_compat import _inline_delivery


class Consumerish(Service):
    """A mode service with the patched `wait_first`, as Faust's Consumer gets it."""

    wait_first = _inline_delivery(Service.wait_first)


def counting_tasks() -> list:
    """Every coroutine the running loop makes a task of from now on (call inside the loop)."""
    created: list = []

    def factory(loop, coro, **kw):
        created.append(coro)
        return asyncio.Task(coro, loop=loop, **kw)

    asyncio.get_running_loop().set_task_factory(factory)
    return created


def run(body):
    """Run `body(service)`; fail on any "coroutine ... was never awaited" (raised from a
    finalizer, so only a recording filter sees it) and count the tasks it created."""

    async def main():
        created = counting_tasks()
        service = Consumerish()
        await asyncio.sleep(0)
        created.clear()  # only the tasks the body's calls make (not asyncio.run's shutdown)
        out = await body(service)
        return out, len(created)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, tasks = asyncio.run(main())
        gc.collect()
    never_awaited = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert never_awaited == [], [str(w.message) for w in never_awaited]
    return out, tasks


def test_the_worker_gets_the_patch_and_the_check_sees_the_original():
    from faust.transport.consumer import Consumer

    faust_compat.install()
    assert getattr(Consumer.wait_first, faust_compat._MARK)
    assert faust_check.ORIGINALS[("faust.transport.consumer", "Consumer", "wait_first")] \
        is Service.wait_first
    faust_check.self_check()


def test_a_delivery_that_needs_no_wait_runs_inline_without_a_task():
    async def body(service):
        suspend = asyncio.Event()
        seen = []

        async def deliver(n):
            seen.append(n)
            return n * 2

        out = [await service.wait_first(deliver(n), suspend.wait()) for n in range(3)]
        return seen, [r.results for r in out], [r.stopped for r in out]

    (seen, results, stopped), tasks = run(body)
    assert seen == [0, 1, 2] and results == [[0], [2], [4]] and stopped == [False] * 3
    assert tasks == 0  # the original makes four per call


def test_each_inline_delivery_gives_the_event_loop_one_turn():
    async def body(service):
        suspend = asyncio.Event()
        order = []

        async def deliver(n):
            order.append(f"deliver {n}")

        async def agent():
            for n in range(3):
                order.append(f"agent {n}")
                await asyncio.sleep(0)

        other = asyncio.ensure_future(agent())
        for n in range(3):
            await service.wait_first(deliver(n), suspend.wait())
        await other
        return order

    order, _tasks = run(body)
    # the agent runs between deliveries, not after all of them
    assert order.index("agent 1") < order.index("deliver 2")


def test_a_delivery_that_waits_goes_on_and_returns_its_result():
    async def body(service):
        suspend = asyncio.Event()
        space = asyncio.get_running_loop().create_future()
        steps = []

        async def deliver():
            steps.append("start")
            steps.append(await space)  # a full buffer: waits for room
            await asyncio.sleep(0)  # a bare yield too
            steps.append("done")
            return "delivered"

        asyncio.get_running_loop().call_later(0.01, space.set_result, "room")
        out = await service.wait_first(deliver(), suspend.wait())
        return steps, out.results, out.stopped

    (steps, results, stopped), tasks = run(body)
    assert steps == ["start", "room", "done"]
    assert results == ["delivered"] and stopped is False
    assert tasks == 4  # it went on under the original race


@pytest.mark.parametrize("already", [False, True])
def test_a_suspension_abandons_a_waiting_delivery_as_before(already):
    async def body(service):
        suspend = asyncio.Event()
        if already:
            suspend.set()
        never = asyncio.get_running_loop().create_future()
        seen = []

        async def deliver():
            seen.append("started")
            try:
                await never
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        if not already:
            asyncio.get_running_loop().call_later(0.01, suspend.set)
        out = await service.wait_first(deliver(), suspend.wait())
        await asyncio.sleep(0)  # the abandoned delivery's cancellation is delivered
        return seen, out

    (seen, out), _tasks = run(body)
    assert seen == ["started", "cancelled"]
    assert out.results == [True] and out.stopped is False  # the suspension's side won


def test_a_delivery_that_completes_is_delivered_even_when_suspended_as_before():
    async def body(service):
        suspend = asyncio.Event()
        suspend.set()
        seen = []

        async def deliver():
            seen.append("delivered")
            return 1

        out = await service.wait_first(deliver(), suspend.wait())
        return seen, out.results

    (seen, results), _tasks = run(body)
    assert seen == ["delivered"] and results == [1]


def test_a_delivery_that_catches_the_cancellation_and_waits_again_is_followed():
    async def body(service):
        suspend = asyncio.Event()
        never = asyncio.get_running_loop().create_future()
        steps = []

        async def deliver():
            try:
                await never
            except asyncio.CancelledError:
                steps.append("cancelled")
                await asyncio.sleep(0.001)  # a new wait after the cancellation
                steps.append("cleaned up")
                raise

        asyncio.get_running_loop().call_later(0.01, suspend.set)
        await service.wait_first(deliver(), suspend.wait())
        await asyncio.sleep(0.01)
        return steps

    steps, _tasks = run(body)
    assert steps == ["cancelled", "cleaned up"]


def test_a_caller_cancelled_meanwhile_cancels_the_waiting_delivery():
    async def body(service):
        suspend = asyncio.Event()
        never = asyncio.get_running_loop().create_future()
        steps = []

        async def deliver():
            try:
                await never
            finally:
                steps.append("finally")

        caller = asyncio.ensure_future(service.wait_first(deliver(), suspend.wait()))
        await asyncio.sleep(0.01)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0)
        return steps

    steps, _tasks = run(body)
    assert steps == ["finally"]


def test_errors_propagate_before_and_after_a_wait():
    async def body(service):
        suspend = asyncio.Event()

        async def at_once():
            raise ValueError("bad record")

        async def later():
            await asyncio.sleep(0.001)
            raise KeyError("bad later")

        with pytest.raises(ValueError, match="bad record"):
            await service.wait_first(at_once(), suspend.wait())
        with pytest.raises(KeyError, match="bad later"):
            await service.wait_first(later(), suspend.wait())
        return True

    assert run(body)[0]


def test_other_calls_and_a_stopped_or_crashed_service_take_the_original_path():
    async def body(service):
        suspend, other = asyncio.Event(), asyncio.Event()
        inline = []

        async def deliver():
            inline.append(asyncio.current_task() is me)
            return 1

        me = asyncio.current_task()
        await service.wait_first(deliver(), suspend.wait())  # the drain loop's call: inline
        await service.wait_first(deliver(), suspend.wait(), timeout=5.0)
        await service.wait_first(deliver(), suspend)  # an Event, not its wait()
        await service.wait_first(deliver(), suspend.wait(), other.wait())
        waiting = asyncio.ensure_future(asyncio.sleep(0))
        await service.wait_first(waiting, suspend.wait())  # a future, not a coroutine
        service._crashed.set()
        crashed = await service.wait_first(deliver(), suspend.wait())
        service._crashed.clear()
        service._stopped.set()
        stopped = await service.wait_first(deliver(), suspend.wait())
        return inline, crashed.stopped, stopped.stopped

    (inline, crashed, stopped), _tasks = run(body)
    assert inline[0] is True and not any(inline[1:4])
    assert crashed is True and stopped is True  # the original reports them


def test_fausts_suspension_is_the_asyncio_event_the_gate_expects():
    """The patch fires only when the race's second side is `asyncio.Event.wait()`: Faust's
    consumer builds `suspend_flow` from asyncio's Event (were it mode's, every record would
    take the original path and this patch would do nothing)."""
    from faust.transport import consumer

    assert consumer.Event is asyncio.Event
    assert "self.suspend_flow = Event()" in __import__("inspect").getsource(consumer.Consumer)


def test_the_patch_fires_on_fausts_own_consumer_without_a_task():
    """The drain loop's real call, on the consumer Faust builds (no broker needed): the
    delivery runs inline, with no task, and its result comes back."""
    import faust

    faust_compat.install()
    app = faust.App("inline-delivery-test", broker="kafka://127.0.0.1:1")

    async def main():
        delivered: list = []

        async def callback(message):
            delivered.append(message)
            return 1

        consumer = app.transport.create_consumer(callback=callback,
                                                 on_partitions_revoked=None,
                                                 on_partitions_assigned=None)
        created = counting_tasks()
        out = await consumer.wait_first(consumer.callback("record"),
                                        consumer.suspend_flow.wait())
        return delivered, out.results, len(created)

    delivered, results, tasks = asyncio.run(main())
    assert delivered == ["record"] and results == [1] and tasks == 0
