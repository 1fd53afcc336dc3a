"""Versions registered at run time (by `reviewbus train` or `versions register`) that the
versions file does not list.

Inference agents and topics are declared when the worker imports its flows, so a worker serves
the versions it knew at start: the worker reads the lifecycle history from ClickHouse before
it imports them (`load_registered`), and topics.py / flows/inference.py declare an agent for
every version of the file plus these (`serving_specs`). A version registered while a worker
runs is therefore served after the next worker start (`reviewbus down && reviewbus up`).
"""

from __future__ import annotations

import logging

from schemas import Registry, VersionSpec, VersionState

log = logging.getLogger("reviewbus")

_registered: list[VersionSpec] = []


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
    """Remember the registered versions for serving_specs; never fails the worker's start."""
    try:
        specs = registered_specs(store, config)
    except Exception:  # a store without history or a bad row: serve the file's versions
        log.exception("could not read registered versions from the store")
        specs = []
    _registered[:] = specs
    if specs:
        log.warning("serving registered versions too: %s", [s.id for s in specs])
    return specs


def serving_specs(config) -> list[VersionSpec]:
    return [*config.versions, *(s for s in _registered if config.spec(s.id) is None)]
