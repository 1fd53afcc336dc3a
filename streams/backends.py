"""The worker's backends, one per version: built on first use off the event loop, rebuilt when
the registry changes the spec, closed and forgotten when the version is archived (a registry
listener, so the refits a learner archives do not pile up in a worker's memory)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from agents.backends.base import Backend, build_backend
from schemas import LifecycleEvent, VersionSpec, VersionState

from .context import AppContext, log


def _identity(spec: VersionSpec) -> str:
    return json.dumps(spec.model_dump(mode="json", include={"backend", "params", "filters"}),
                      sort_keys=True, default=str)


async def backend_for(ctx: AppContext, spec: VersionSpec) -> Backend:
    """Built once per worker (and again when the registry changes the spec), off the event
    loop (model loads can be slow); cached in ctx.backends: version -> (spec identity, backend)."""
    _backends = ctx.backends
    lock = ctx.backend_locks.setdefault(spec.id, asyncio.Lock())
    key = _identity(spec)
    async with lock:
        cached = _backends.get(spec.id)
        if cached is None or cached[0] != key:
            backend = await asyncio.to_thread(build_backend, spec)
            _backends[spec.id] = (key, backend)
            if cached is not None:
                log.warning("version %s: spec changed in the registry, backend rebuilt", spec.id)
                with contextlib.suppress(Exception):
                    await cached[1].close()
    return _backends[spec.id][1]


_closing: set[asyncio.Future] = set()  # closes under way (a reference, so none is collected)


def release_backend(ctx: AppContext, event: LifecycleEvent) -> None:
    """A registry listener: an archived version's backend (models, warm processes) is closed
    and forgotten, so the refits a learner archives do not pile up in a worker's memory."""
    if event.to_state != VersionState.archived:
        return
    cached = ctx.backends.pop(event.version_id, None)
    if cached is None:
        return

    async def close() -> None:
        try:
            await cached[1].close()
        except Exception:  # noqa: BLE001 - a backend that fails to close is forgotten anyway
            log.warning("closing the backend of archived %s failed", event.version_id,
                        exc_info=True)

    try:
        closing = asyncio.ensure_future(close())
    except RuntimeError:  # no running loop (a fold outside the worker): nothing to close on
        return
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)


__all__ = ["backend_for", "release_backend"]
