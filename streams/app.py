"""The one Faust app. Built from REVIEWBUS_* settings when `reviewbus worker` imports it."""

from __future__ import annotations

import faust

from agents.config import load_config
from agents.settings import Settings, load_settings
from infra.broker import find_broker


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    credentials = None
    if settings.kafka_sasl_mechanism and settings.kafka_sasl_password is not None:
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=None,
        )
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
        stream_wait_empty=False,
        table_cleanup_interval=60.0,
    )


settings = load_settings()
config = load_config(settings.config)
bootstrap = find_broker(settings).address
app = create_app(settings, bootstrap)
