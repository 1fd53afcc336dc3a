"""What every use case needs: the store, the registry, the broker, times and the actor."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

from agents.errors import BrokerUnavailable, ReviewbusError
from agents.settings import Settings
from schemas import Registry

from .. import names


@contextlib.contextmanager
def store_for(settings: Settings) -> Iterator:
    """The local store when free; else the running worker's, through its web port."""
    from infra.store import Store, open_store

    store = open_store(settings)
    try:
        yield store
    finally:
        if isinstance(store, Store):
            store.close()


def bootstrap(settings: Settings) -> str:
    """The broker's address (raises BrokerUnavailable when none runs)."""
    from infra.broker import find_broker

    return find_broker(settings).address


async def publish(settings: Settings, topic: str,
                  messages: Iterable[tuple[bytes | None, bytes]],
                  address: str | None = None,
                  progress: Callable[[int], None] | None = None) -> int:
    """Produce (key, value) messages to a full topic name; returns how many."""
    from infra.kafka import produce_all, start_producer

    producer = await start_producer(settings, address or bootstrap(settings))
    try:
        return await produce_all(producer, topic, messages, progress)
    finally:
        await producer.stop()


def current_registry(settings: Settings) -> Registry:
    """From the lifecycle topic when a broker runs, else from the store's history."""
    from agents.registry import fold, newer_schema_of, newer_schema_text
    from infra.config_file import load_config
    from infra.kafka import read_to_end
    from infra.readback import registry_from_store
    from schemas import LifecycleEvent

    task = load_config(settings.config).task
    try:
        raw = asyncio.run(read_to_end(settings, bootstrap(settings),
                                      names.topic(settings, "lifecycle")))
        newer = next((n for v in raw if (n := newer_schema_of(v)) is not None), None)
        if newer is not None:  # what this code would fold is not what the workers fold
            raise ReviewbusError(newer_schema_text(newer, "on the lifecycle topic"))
        registry = fold(task, [LifecycleEvent.model_validate_json(v) for v in raw])
        if registry.versions:
            return registry
    except BrokerUnavailable:
        pass
    with store_for(settings) as store:
        registry = registry_from_store(store, task)
    if registry.behind is not None:
        raise ReviewbusError(registry.behind)
    return registry


def parse_window(text: str) -> int:
    """'90s', '15m', '24h', '7d' or plain seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(float(text))
    except ValueError as exc:
        raise ReviewbusError(f"bad window {text!r}: use e.g. 90s, 15m, 24h, 7d") from exc


def parse_time(text: str | None) -> datetime | None:
    """An ISO time (UTC unless it says otherwise) or an age like 2h before now."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC) - timedelta(seconds=parse_window(text))


def default_actor() -> str:
    """Who runs a command: user:$USER."""
    try:
        user = os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"user:{user}"


class Quiet:
    """A progress that shows nothing (the default of every use case that reports progress);
    the CLI passes streams.cli.render.Progress, with the same (total, label) signature."""

    def __init__(self, total: int = 0, label: str = "") -> None:
        self.total, self.label, self.done = total, label, 0

    def update(self, n: int = 1) -> None:
        self.done += n

    def set(self, done: int) -> None:
        self.done = done

    def close(self) -> None:
        pass
