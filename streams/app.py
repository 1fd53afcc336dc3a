"""The one Faust app. Built from REVIEWBUS_* settings when `reviewbus worker` imports it."""

from __future__ import annotations

import asyncio
import logging
import sys

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.config import load_config
from agents.settings import Settings, load_settings
from infra.broker import find_broker
from infra.kafka import FETCH_MAX_WAIT_MS, client_kwargs

from . import delivery

_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def _short_fetch_wait(self, transport):
    """Faust hard-codes fetch_max_wait_ms=1500; Tansu holds every fetch that long, so each hop
    waited up to 1.5 s for data that was already there (see FETCH_MAX_WAIT_MS)."""
    consumer = _create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
    return consumer


faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _short_fetch_wait
delivery.install()  # never skip records after a rebalance (see streams/delivery.py)


def broker_credentials(settings: Settings, bootstrap: str) -> faust.types.auth.CredentialsT | None:
    """TLS and SASL for the worker, from the same settings as every other client
    (infra/kafka.py client_kwargs): SSL -> TLS, SASL_PLAINTEXT -> SASL, SASL_SSL -> both."""
    kw = client_kwargs(settings, bootstrap)
    if "sasl_mechanism" in kw:
        return faust.SASLCredentials(
            username=kw.get("sasl_plain_username"), password=kw.get("sasl_plain_password"),
            mechanism=kw["sasl_mechanism"], ssl_context=kw.get("ssl_context"))
    if "ssl_context" in kw:
        return faust.SSLCredentials(kw["ssl_context"])
    return None


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    credentials = broker_credentials(settings, bootstrap)
    brokers = ";".join(f"kafka://{hp}" for hp in bootstrap.split(","))
    return faust.App(
        settings.resolved_app_id(),
        broker=brokers,
        broker_credentials=credentials,
        store="memory://",
        datadir=str(settings.home / "faust"),
        web_enabled=True,
        web_port=settings.web_port or 6066,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        # Join fast: the rebalance timeout bounds how long the first group join waits.
        broker_rebalance_timeout=2,
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_every=100,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=16_000_000,
        consumer_max_fetch_size=16_000_000,
        producer_acks=-1,
        table_cleanup_interval=60.0,
        # Standby recovery trusts ListOffsets, which Tansu under-reports (see infra/kafka.py
        # true_end_offsets): with a standby, a rebalance could crash on ConsistencyError.
        table_standby_replicas=0,
    )


try:  # uvloop where installed: the worker's event loop does per-message work
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:  # pragma: no cover - plain asyncio works the same, slower
    pass

# The worker's threads (Faust's consumer thread, the store thread) hold the GIL for up to the
# switch interval (5 ms) whenever the event loop waits on a socket; at 0.5 ms a produce ack
# no longer costs milliseconds (bench/: hop latency under load fell 10-30x with the rest).
GIL_SWITCH_INTERVAL_S = 0.0005
sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)

settings = load_settings()
# mode's worker sets the root logger to DEBUG and lets its handlers filter, so these libraries
# build a log record for every message sent or fetched (about 10% of the worker's CPU).
_level = logging.getLevelName(settings.log_level.upper())
for _name in ("faust", "mode", "aiokafka"):
    logging.getLogger(_name).setLevel(max(logging.INFO, _level if isinstance(_level, int) else 0))
config = load_config(settings.config)
bootstrap = find_broker(settings).address
app = create_app(settings, bootstrap)
