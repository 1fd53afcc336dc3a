"""Versions registered at run time (by `reviewbus train`, `versions register` or the learner
agent) that the versions file does not list.

Inference topics and agents are declared when the worker builds its app: `run_worker` reads
the lifecycle history from ClickHouse (`load_registered`) and passes `serving_specs(config,
registered)` to `create_app`, which declares a topic and an agent for every version of the
file plus these. A version registered while a worker runs is served at once through the one
shared topic and agent, `inference._pool` (streams/flows/router.py `inference_topic_of`,
streams/flows/inference.py `install_pool`), and gets its own at the next worker start: the
pool holds only the versions registered since the last start. They share one agent, so a slow
one delays the others of the pool (never a version with its own topic) until then."""

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
