"""`reviewbus worker`: one Faust worker running every agent; one of several with `--workers N`.

Everything process-wide happens here, in order, and nowhere at import: Faust's patches (with
their self-check), the event loop policy, the GIL switch interval, log levels; then the topics,
the store, and `create_app` with the versions to serve; then Faust's worker takes the process.

Several workers of one home (`reviewbus up --workers N`, streams/supervisor.py sets
REVIEWBUS_WORKER_INDEX and REVIEWBUS_WORKERS) share one consumer group and one store: the
worker holding the embedded store's lock hosts it and writes `<home>/worker.json`; the others
reach it over HTTP with the store token (streams/shared_store.py says what happens when the
host dies). Every worker writes `<home>/workers/<index>.json` (pid, web_url, hosts_store),
which `reviewbus status` reads to ask each one for its partitions and leadership.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time

from agents.errors import StoreBusy
from agents.settings import Settings
from infra.broker import find_broker
from infra.config_file import load_config
from infra.kafka import ensure_topics
from infra.procs import free_port, read_json, write_json

from . import names

WORKER_FILE = "worker.json"  # the worker that hosts the embedded store (or the only one)
WORKERS_DIR = "workers"  # <index>.json per worker of a multi-worker run
# A worker of several that starts while the store's host is itself starting (or restarting)
# waits this long for it before it fails like a single worker (StoreBusy, exit 2).
STORE_WAIT_S = 120.0

# The worker's threads (Faust's consumer thread, the store thread) hold the GIL for up to the
# switch interval (5 ms) whenever the event loop waits on a socket; at 0.5 ms a produce ack
# no longer costs milliseconds (bench/: hop latency under load fell 10-30x with the rest).
GIL_SWITCH_INTERVAL_S = 0.0005
QUIET_LIBRARIES = ("faust", "mode", "aiokafka")


def configure_process(settings: Settings) -> None:
    """Process-wide setup for a worker; raises FaustIncompatible (a ReviewbusError) when the
    installed Faust no longer has what infra/faust_compat.py patches."""
    from infra import faust_compat

    # the fetch wait, in-order delivery (see its docstring)
    faust_compat.install(settings.fetch_idle_after_s, settings.fetch_idle_wait_ms)
    try:  # uvloop where installed: the worker's event loop does per-message work
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - plain asyncio works the same, slower
        pass
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    tune_gc(settings.gc_young_threshold)
    # mode's worker sets the root logger to DEBUG and lets its handlers filter, so these
    # libraries build a log record for every message sent or fetched (about 10% of the CPU).
    level = logging.getLevelName(settings.log_level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, level if isinstance(level, int) else 0))
    logging.getLogger("reviewbus").setLevel(settings.log_level.upper())


def tune_gc(young_threshold: int) -> None:
    """Collect the youngest generation every `young_threshold` net allocations instead of
    Python's 700 (0: leave it). Every hop holds its batch of parsed events until the batch is
    sent (the sink: 5,000 results, a dozen objects each), so at 700 nearly every young
    collection scans objects that survive it, and the survivors pile up into a full collection
    of the whole heap (~340,000 objects in a worker) every batch or two. In the sink that was
    28-76 us of the 43-88 us each result cost to parse (gc.callbacks, bench/sink.py's backlog);
    py-spy cannot show it: it charges a collection to whatever line allocated. 50,000 (sweep
    of 10,000, 50,000, 100,000): the sink drains ~40 % faster and the bus serves 14-28 % more
    events per second (docs/concepts/batching.md). The older generations keep their
    thresholds, so cycles are still collected, only in larger steps."""
    if young_threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)


def worker_index() -> int:
    return int(os.environ.get("REVIEWBUS_WORKER_INDEX") or 0)


def worker_count() -> int:
    return max(1, int(os.environ.get("REVIEWBUS_WORKERS") or 1))


def worker_file(home, index: int):
    return home / WORKERS_DIR / f"{index}.json"


def open_shared_store(settings: Settings):
    """The store, hosted here or by a sibling worker. A single worker (REVIEWBUS_WORKERS
    unset or 1) refuses to start when another process holds the store and no worker answers
    for it; one of several waits up to STORE_WAIT_S for its host."""
    from infra.store import Store, open_store

    from .shared_store import SharedStore

    deadline = time.monotonic() + (STORE_WAIT_S if worker_count() > 1 else 0.0)
    while True:
        try:
            store = open_store(settings)
            break
        except StoreBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    if not isinstance(store, Store) and worker_count() <= 1:
        store.close()
        raise StoreBusy(f"the store {settings.resolved_clickhouse()} is held by another worker")
    return SharedStore(settings, store)


def run_worker(settings: Settings) -> int:
    """Prepare topics and store, build the app, then hand the process to Faust until it is
    stopped."""
    configure_process(settings)
    config = load_config(settings.config)
    bootstrap = find_broker(settings).address
    asyncio.run(ensure_topics(settings, bootstrap,
                              names.all_topics(settings, [v.id for v in config.versions])))
    index = worker_index()
    if settings.web_port and index and not os.environ.get("REVIEWBUS_WORKER_PORT_SET"):
        # A fixed web port with several workers: worker i listens on port + i.
        os.environ["REVIEWBUS_WEB_PORT"] = str(settings.web_port + index)
        os.environ["REVIEWBUS_WORKER_PORT_SET"] = "1"
        settings = settings.model_copy(update={"web_port": settings.web_port + index})
    if not settings.web_port:
        # In the environment too: a restart in place (exec, streams/flows/healing.py) keeps it.
        os.environ["REVIEWBUS_WEB_PORT"] = str(free_port(settings.web_host))
        settings = settings.model_copy(update={"web_port": int(os.environ["REVIEWBUS_WEB_PORT"])})
    os.environ.setdefault("REVIEWBUS_HOME", str(settings.home))

    from infra.store import AsyncStore

    store = open_shared_store(settings)
    try:
        return _serve(settings, config, bootstrap, store, AsyncStore)
    finally:
        store.close()


def _serve(settings: Settings, config, bootstrap: str, store, async_store) -> int:
    import faust

    from .app import create_app
    from .registered import load_registered, serving_specs

    # Versions registered since the versions file was written (e.g. by `reviewbus train`):
    # their inference topics and agents are declared too.
    extra = load_registered(store, config)
    if extra:
        asyncio.run(ensure_topics(settings, bootstrap, {
            names.inference_topic(settings, v.id): settings.partitions for v in extra}))
    ctx = create_app(settings, config, bootstrap, serving_specs(config, extra))
    ctx.store = async_store(store)
    app = ctx.app
    web_url = f"http://{settings.web_host}:{app.conf.web_port}"
    index = worker_index()
    me = {"pid": os.getpid(), "web_url": web_url, "app_id": app.conf.id, "broker": bootstrap,
          "index": index}

    def announce_host(_store=None) -> None:
        write_json(settings.home / WORKER_FILE, me)
        announce_self()

    def announce_self() -> None:
        (settings.home / WORKERS_DIR).mkdir(parents=True, exist_ok=True)
        write_json(worker_file(settings.home, index), me | {"hosts_store": store.hosting})

    store.on_host = announce_host  # a takeover after the host died (streams/shared_store.py)

    @ctx.task(name="announce")
    async def announce() -> None:
        if store.hosting:
            announce_host()
        else:
            announce_self()

    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        for path in (settings.home / WORKER_FILE, worker_file(settings.home, index)):
            if (read_json(path) or {}).get("pid") == os.getpid():  # not a successor's
                path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":  # `python -m streams.worker`, used by `reviewbus up --detach`
    from agents.errors import ReviewbusError
    from agents.settings import load_settings

    try:
        sys.exit(run_worker(load_settings()))
    except ReviewbusError as exc:
        print(f"reviewbus worker: {exc}", file=sys.stderr)
        sys.exit(2)
