"""`reviewbus worker`: one Faust worker running every agent, owning the embedded store."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from agents.config import load_config
from agents.errors import StoreBusy
from agents.settings import Settings
from infra.broker import find_broker
from infra.kafka import ensure_topics
from infra.procs import free_port, write_json

from . import names

WORKER_FILE = "worker.json"


def run_worker(settings: Settings) -> int:
    """Prepare topics and store, then hand the process to Faust until it is stopped."""
    config = load_config(settings.config)
    bootstrap = find_broker(settings).address
    asyncio.run(ensure_topics(settings, bootstrap,
                              names.all_topics(settings, [v.id for v in config.versions])))
    if not settings.web_port:
        os.environ["REVIEWBUS_WEB_PORT"] = str(free_port(settings.web_host))
    os.environ.setdefault("REVIEWBUS_HOME", str(settings.home))

    from infra.store import AsyncStore, Store, open_store

    store = open_store(settings)
    if not isinstance(store, Store):
        raise StoreBusy(f"the store {settings.resolved_clickhouse()} is held by another worker")
    # Versions registered since the versions file was written (e.g. by `reviewbus train`):
    # their inference topics and agents are declared too (streams/registered.py).
    from .registered import load_registered

    extra = load_registered(store, config)
    if extra:
        asyncio.run(ensure_topics(settings, bootstrap, {
            names.inference_topic(settings, v.id): settings.partitions for v in extra}))

    import faust

    from . import flows, web  # noqa: F401  (registers agents and pages)
    from .app import app
    from .app import settings as app_settings
    from .runtime import runtime, task

    runtime.store = AsyncStore(store)
    web_url = f"http://{app_settings.web_host}:{app.conf.web_port}"

    @task(name="announce")
    async def announce() -> None:
        write_json(settings.home / WORKER_FILE, {"pid": os.getpid(), "web_url": web_url,
                                                 "app_id": app.conf.id, "broker": bootstrap})

    level = settings.log_level.upper()
    logging.getLogger("reviewbus").setLevel(level)
    worker = faust.Worker(app, loglevel=level, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        try:
            (settings.home / WORKER_FILE).unlink(missing_ok=True)
        finally:
            store.close()
    return 0


if __name__ == "__main__":  # `python -m streams.worker`, used by `reviewbus up --detach`
    from agents.errors import ReviewbusError
    from agents.settings import load_settings

    try:
        sys.exit(run_worker(load_settings()))
    except ReviewbusError as exc:
        print(f"reviewbus worker: {exc}", file=sys.stderr)
        sys.exit(2)
