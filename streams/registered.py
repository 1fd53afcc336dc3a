"""Versions registered at run time (by `reviewbus train` or `versions register`) that the
versions file does not list.

Inference agents and topics are declared when the worker builds its app, so a worker serves
the versions it knew at start: `run_worker` reads the lifecycle history from ClickHouse
(`load_registered`) and passes `serving_specs(config, registered)` to `create_app`, which
declares an agent for every version of the file plus these. A version registered while a
worker runs is therefore served after the next worker start (`reviewbus down && reviewbus up`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from schemas import Registry, VersionSpec, VersionState

log = logging.getLogger("reviewbus")


def unlisted_specs(registry: Registry, config) -> list[VersionSpec]:
    """Specs of the registry that the config lacks (registered at run time), not archived."""
    known = {v.id for v in config.versions}
    return [e.spec for vid, e in sorted(registry.versions.items())
            if vid not in known and e.state != VersionState.archived]


def registered_specs(store, config) -> list[VersionSpec]:
    """unlisted_specs of the store's lifecycle history (folded)."""
    from infra.readback import registry_from_store

    return unlisted_specs(registry_from_store(store, config.task), config)


def load_registered(store, config) -> list[VersionSpec]:
    """registered_specs, but never failing the worker's start (a store without history or a
    bad row: serve the file's versions only)."""
    try:
        specs = registered_specs(store, config)
    except Exception:
        log.exception("could not read registered versions from the store")
        return []
    if specs:
        log.warning("serving registered versions too: %s", [s.id for s in specs])
    return specs


def serving_specs(config, registered: Iterable[VersionSpec] = ()) -> list[VersionSpec]:
    """The versions file's specs, then the registered ones it does not list."""
    return [*config.versions, *(s for s in registered if config.spec(s.id) is None)]
