"""`create_app`: the worker's Faust app, its topics, agents, timers, tasks and pages, built
explicitly from what the caller passes (importing this module does nothing: no environment,
no broker, no patches; streams/worker.py does the process-level things before it calls this).
"""

from __future__ import annotations

from collections.abc import Iterable

import faust

from agents.settings import Settings
from infra.kafka import client_kwargs
from infra.partitioner import KafkaPartitioner
from schemas import VersionSpec

from .context import AppContext
from .topics import Topics


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


def faust_app(settings: Settings, bootstrap: str) -> faust.App:
    """The bare Faust app (no topics or agents yet); building it connects to nothing."""
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
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        # Faust refuses a session timeout at or above the request timeout (90 s by default).
        broker_request_timeout=max(90.0, settings.broker_session_timeout_s + 30.0),
        broker_commit_every=100,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=16_000_000,
        # Batches of 1 MiB, not aiokafka's 16 KiB: it sends one batch per partition at a time,
        # so with 16 KiB a hop that sends a whole batch of outputs waits a round trip per ~10
        # events (bench/rawpipe.py: 556 -> 734 events/s). Linger as the other clients.
        producer_max_batch_size=1_048_576,
        producer_linger=0.005,
        producer_partitioner=KafkaPartitioner(),  # Java's rule, half aiokafka's CPU per record
        consumer_max_fetch_size=16_000_000,
        producer_acks=-1,
        table_cleanup_interval=60.0,
        # Standby recovery trusts ListOffsets, which Tansu under-reports (see infra/kafka.py
        # true_end_offsets): with a standby, a rebalance could crash on ConsistencyError.
        table_standby_replicas=0,
    )


def create_app(settings: Settings, config, bootstrap: str,
               serving_specs: Iterable[VersionSpec]) -> AppContext:
    """The app with every topic, agent (one `inference.<version>` per served spec), timer,
    task and web page registered; `ctx.app` is the faust.App, `ctx.agents` its agents."""
    from . import flows, memory, web

    app = faust_app(settings, bootstrap)
    ctx = AppContext(app, settings, config, bootstrap, Topics(app, settings, serving_specs))
    flows.register(ctx)
    memory.register(ctx)
    web.register(ctx)
    return ctx


__all__ = ["broker_credentials", "create_app", "faust_app"]
