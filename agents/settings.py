"""All settings and every environment variable name, in one place (prefix REVIEWBUS_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """Input limits, enforced at intake (REVIEWBUS_LIMIT_*)."""

    model_config = SettingsConfigDict(env_prefix="REVIEWBUS_LIMIT_", extra="ignore",
                                      env_ignore_empty=True)

    max_message_bytes: int = 8_000_000  # whole Kafka message
    max_diff_chars: int = 400_000  # longer diffs are truncated, not rejected
    max_files: int = 300
    max_file_bytes: int = 400_000  # post-image content kept per file
    max_total_content_bytes: int = 4_000_000


class Settings(BaseSettings):
    """Runtime settings. `REVIEWBUS_KAFKA` unset means: use the embedded broker."""

    # An empty variable counts as unset: a CI recipe that passes an unset secret or variable
    # (`${{ vars.X }}` is "" then) gets the default, not an empty value.
    model_config = SettingsConfigDict(env_prefix="REVIEWBUS_", extra="ignore",
                                      env_ignore_empty=True)

    home: Path = Path(".reviewbus")
    kafka: str | None = None  # host:port[,host:port]; None -> embedded Tansu
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    clickhouse: str | None = None  # DSN; None -> chdb:///<home>/clickhouse
    clickhouse_password: SecretStr | None = None
    config: Path | None = None  # versions YAML; None -> the packaged default
    topic_prefix: str = "reviewbus."
    app_id: str | None = None  # Faust app/consumer group id; None -> derived from prefix
    partitions: int = Field(default=4, ge=1)
    # The consumer group (REVIEWBUS_BROKER_*): a worker that sends no heartbeat for
    # session_timeout_s is dropped from the group and its partitions move to the others; a
    # rebalance waits at most rebalance_timeout_s for the members to join again. The embedded
    # broker (Tansu) holds every JoinGroup for half the session timeout, so a worker's first
    # join there takes about session_timeout_s / 2 (bench/rdkafka_join.py). Apache Kafka refuses
    # a session timeout below its group.min.session.timeout.ms (6 s by default).
    # heartbeat_interval_s stays well below the session timeout (a third at most).
    broker_session_timeout_s: float = Field(default=10.0, gt=0)
    broker_rebalance_timeout_s: float = Field(default=2.0, gt=0)
    broker_heartbeat_interval_s: float = Field(default=1.0, gt=0)
    web_port: int = 0  # 0 -> a free port, written to <home>/worker.json
    web_host: str = "127.0.0.1"
    log_level: str = "warning"
    sink_batch: int = Field(default=5000, ge=1)
    sink_within_s: float = Field(default=1.0, gt=0)
    # A batch closes early once nothing arrived for this long: on a quiet bus the last events
    # are stored this soon after they came (not at the end of sink_within_s); it also bounds
    # the inserts to 1 / sink_idle_s per second however the events trickle in.
    sink_idle_s: float = Field(default=0.2, gt=0)
    # The worker's Faust consumer fetches with a 20 ms wait (infra/tansu.py); once it has
    # fetched nothing for fetch_idle_after_s its fetches wait fetch_idle_wait_ms, until one
    # returns records (infra/faust_compat.py). The records of the first fetch after a quiet
    # spell wait at most fetch_idle_wait_ms longer; either 0: always the short wait (an idle
    # worker polls 50/s). 10 s, not 2: a CI burst after a pause of seconds pays nothing
    # (bench/idle_routing.py), an idle worker still polls 4/s for all but 10 s of a quiet hour.
    fetch_idle_after_s: float = Field(default=10.0, ge=0)
    fetch_idle_wait_ms: int = Field(default=250, ge=0)
    # Every hop takes what is there, up to batch_max events or batch_within_s (streams/batching.py).
    # Faust's noack_take waits the whole window unless the batch fills, so at partial load every
    # hop holds each event up to batch_within_s: 10 ms, not 50, cut the routing p50 at 800/s
    # from 58-61 to 34 ms with the same throughput; 3 ms cost a fifth of it
    # (docs/concepts/batching.md).
    batch_max: int = Field(default=500, ge=1)
    batch_within_s: float = Field(default=0.01, gt=0)
    # Batches of a hop whose outputs are on their way to the broker while it takes the next
    # (streams/batching.py InOrderAcks); 1: each take waits for the acks of the one before.
    batch_acks_in_flight: int = Field(default=4, ge=1)
    # Intake's window (its own consumer, streams/flows/intake.py): from its first record, so
    # short; a batch there costs a getmany and a commit, not Faust's per-batch overhead.
    # 2 ms, not 10: routing p99 29-31 against 45-48 ms at 900/s, with more events/s.
    intake_within_s: float = Field(default=0.002, gt=0)
    litellm_api_key: SecretStr | None = None
    # Broker watchdog (streams/flows/healing.py): how often the worker checks that its topics
    # still exist, and recreates them (a restarted embedded broker forgets every topic).
    topic_check_interval_s: float = Field(default=3.0, gt=0)
    # The leader's periodic queries (infra/queries.py) read their window of results by the
    # request's accepted time too (the store's sort key): a result that came more than this
    # after its request was accepted is not counted by rotation, budgets and filters.
    timer_max_lag_s: float = Field(default=24 * 3600.0, gt=0)
    # Quarantine re-tests replay the newest archived requests of this window (bounds the read).
    retest_sample_window_s: float = Field(default=30 * 24 * 3600.0, gt=0)
    # The supervisor of `reviewbus up --detach` (streams/supervisor.py, REVIEWBUS_SUPERVISOR_*):
    # a worker that fails is restarted after initial * 2**(k-1) s, capped at max, k = its
    # deaths within the window; crash_loop_deaths deaths within the window: no more restarts.
    # Keep crash_loop_deaths above the versions file's quarantine.crash_loop_restarts, so a
    # worker quarantines a version that keeps killing it before the supervisor gives up.
    supervisor_backoff_initial_s: float = Field(default=1.0, ge=0)
    supervisor_backoff_max_s: float = Field(default=60.0, ge=0)
    supervisor_crash_loop_deaths: int = Field(default=5, ge=1)
    supervisor_crash_loop_window_s: float = Field(default=600.0, gt=0)
    supervisor_stop_grace_s: float = Field(default=20.0, gt=0)  # SIGTERM, then SIGKILL
    supervisor_poll_s: float = Field(default=0.2, gt=0)
    # FAULT INJECTION, for tests and drills only: while this file exists every ClickHouse
    # insert fails as if the server were down (REVIEWBUS_FAULT_STORE_DOWN_FILE).
    fault_store_down_file: Path | None = None
    # FAULT INJECTION: these timers (comma list of names, or *) raise on every tick
    # (REVIEWBUS_FAULT_TIMER_ERRORS); streams/guard.py must keep the worker alive.
    fault_timer_errors: str = ""
    # A background task that raised starts again after this many seconds (streams/guard.py).
    task_restart_s: float = Field(default=5.0, gt=0)
    # The worker's memory (streams/memory.py): a JSON line of RSS, glibc heap (in use, free)
    # and, with memory_trace, tracemalloc's growth by site, every report interval (0: off); and
    # glibc's malloc_trim every trim interval (0: off), which hands the free pages of the heap
    # back to the system. On by default: without it the soak run's RSS grew 12 % in one step
    # of heap high water, with it not at all; one trim takes about 20 ms in a thread.
    memory_report_interval_s: float = Field(default=0.0, ge=0)
    memory_trace: bool = False
    malloc_trim_interval_s: float = Field(default=60.0, ge=0)
    # Python collects its youngest generation every 700 net allocations by default; a worker
    # keeps whole batches of parsed events alive, so those collections scan survivors and
    # promote them into full collections of the whole heap (streams/worker.py tune_gc).
    # 0: Python's default.
    gc_young_threshold: int = Field(default=50_000, ge=0)

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> Settings:
        if self.broker_heartbeat_interval_s * 3 > self.broker_session_timeout_s:
            raise ValueError(
                f"broker_heartbeat_interval_s ({self.broker_heartbeat_interval_s:g}) must be at "
                f"most a third of broker_session_timeout_s ({self.broker_session_timeout_s:g})")
        return self

    def resolved_clickhouse(self) -> str:
        if self.clickhouse:
            return self.clickhouse
        return f"chdb:///{self.home.resolve() / 'clickhouse'}".replace("////", "///")

    def resolved_app_id(self) -> str:
        if self.app_id:
            return self.app_id
        return (self.topic_prefix.rstrip(".") or "reviewbus").replace(".", "-")


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
