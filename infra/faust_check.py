"""The self-check behind infra/faust_compat.py: every Faust, mode and aiokafka internal that
reviewbus patches (or that a patch calls or relies on) must exist with the parameters it was
written against, else the worker refuses to start with one line (`FaustIncompatible`) instead
of losing records silently."""

from __future__ import annotations

import importlib
import inspect
from importlib import metadata

from agents.errors import ReviewbusError

WRITTEN_AGAINST = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1", "aiokafka": "0.14.0"}


class FaustIncompatible(ReviewbusError):
    """The installed Faust, mode or aiokafka lacks an internal that reviewbus patches."""


# (module, class, attribute, parameters it was written against). The first seven are replaced
# (`_drain_messages` makes the call the seventh takes over); the rest are called by the
# replacements, or by `aiokafka_producer` (`Producer._ensure_producer`).
CHECKED = (
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_create_worker_consumer",
     "(self, transport)"),
    ("faust.transport.consumer", "Consumer", "getmany", "(self, timeout)"),
    ("faust.transport.consumer", "Consumer", "seek", "(self, partition, offset)"),
    ("faust.transport.consumer", "ThreadDelegateConsumer", "seek_to_committed", "(self)"),
    ("mode.utils.queues", "FlowControlEvent", "clear", "(self)"),
    ("faust.app.base", "App", "_consumer_wait_empty", "(self, consumer, logger)"),
    ("faust.transport.consumer", "Consumer", "wait_first", "(self, *coros, timeout)"),
    ("faust.transport.consumer", "Consumer", "_drain_messages", "(self, fetcher)"),
    ("faust.transport.consumer", "Consumer", "earliest_offsets", "(self, *partitions)"),
    ("faust.transport.consumer", "Consumer", "commit_and_end_transactions", "(self)"),
    ("faust.transport.consumer", "Consumer", "_clean_unacked_messages", "(self)"),
    ("faust.transport.consumer", "Consumer", "_wait_for_ack", "(self, timeout)"),
    ("faust.transport.consumer", "ThreadDelegateConsumer", "assignment", "(self)"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_ensure_consumer",
     "(self)"),
    ("aiokafka", "AIOKafkaConsumer", "__init__", None),  # must take fetch_max_wait_ms
    # The hops send their outputs with Faust's aiokafka producer directly (`send_all`).
    ("faust.transport.drivers.aiokafka", "Producer", "_ensure_producer", "(self)"),
    # The idle fetch wait: start() creates `_fetcher`, which reads `_fetch_max_wait_ms` per
    # request (SOURCE_NEEDS) and whose `_proc_fetch_request` is wrapped per instance.
    ("aiokafka", "AIOKafkaConsumer", "start", "(self)"),
    ("aiokafka.consumer.fetcher", "Fetcher", "_proc_fetch_request",
     "(self, assignment, node_id, request)"),
    ("aiokafka.consumer.fetcher", "Fetcher", "_get_actions_per_node", "(self, assignment)"),
    ("aiokafka.consumer.fetcher", "Fetcher", "_fetch_requests_routine", "(self)"),
)
# (module, class, attribute) of CHECKED -> text its source must contain: what a patch relies
# on inside it.
SOURCE_NEEDS = {
    ("aiokafka", "AIOKafkaConsumer", "start"): "self._fetcher = Fetcher(",
    ("aiokafka.consumer.fetcher", "Fetcher", "_get_actions_per_node"): "self._fetch_max_wait_ms",
    ("aiokafka.consumer.fetcher", "Fetcher", "_fetch_requests_routine"): "_proc_fetch_request",
    # the wrapper reads its result as "records came" (also True on some partition errors,
    # which only keep the short wait); a None would leave the worker idle for good
    ("aiokafka.consumer.fetcher", "Fetcher", "_proc_fetch_request"): "return needs_wakeup",
    # the inline delivery: the one call it takes over, and how the original takes `Continue`
    ("faust.transport.consumer", "Consumer", "_drain_messages"):
        "callback(message), self.suspend_flow.wait()",
    ("faust.transport.consumer", "Consumer", "wait_first"):
        "coro if isinstance(coro, Awaitable) else coro.wait()",
}
ORIGINALS: dict[tuple[str, str, str], object] = {}  # what install() replaced, for the check


def bare_signature(fn) -> str:
    """`(self, *partitions)`: parameter names and kinds, without annotations or defaults."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        out.append(prefix + p.name)
    return f"({', '.join(out)})"


def _problem(module: str, cls: str, attr: str, expected: str | None) -> str | None:
    where = f"{module}.{cls}.{attr}"
    try:
        owner = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        return f"{module}.{cls} is missing"
    fn = ORIGINALS.get((module, cls, attr), getattr(owner, attr, None))
    if fn is None:
        return f"{where} is missing"
    needs = SOURCE_NEEDS.get((module, cls, attr))
    if needs is not None and needs not in inspect.getsource(fn):
        return f"{where} no longer uses {needs}"
    got = bare_signature(fn)
    if expected is None:  # aiokafka's consumer: the option whose attribute the patch sets
        ok = "fetch_max_wait_ms" in got and "_fetch_max_wait_ms" in inspect.getsource(owner.start)
        return None if ok else f"{where} no longer takes fetch_max_wait_ms"
    return None if got == expected else f"{where} has signature {got}, expected {expected}"


def installed_versions() -> dict[str, str]:
    out = {}
    for dist in WRITTEN_AGAINST:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def self_check(checked=None) -> None:
    """Raise FaustIncompatible (one line) unless every checked attribute (default: CHECKED)
    is as expected."""
    entries = CHECKED if checked is None else checked
    problems = [p for entry in entries if (p := _problem(*entry)) is not None]
    if problems:
        versions = ", ".join(f"{k} {v}" for k, v in installed_versions().items())
        written = ", ".join(f"{k} {v}" for k, v in WRITTEN_AGAINST.items())
        raise FaustIncompatible(
            f"Faust internals changed, refusing to start: {'; '.join(problems)} "
            f"(infra/faust_compat.py was written against {written}; installed: {versions})")


__all__ = ["CHECKED", "ORIGINALS", "SOURCE_NEEDS", "WRITTEN_AGAINST", "FaustIncompatible",
           "bare_signature", "installed_versions", "self_check"]
