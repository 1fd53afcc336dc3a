"""Prometheus metrics of the worker (served at /metrics). Labels stay low-cardinality."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("reviewbus_events_total", "Events handled by an agent", ["agent", "outcome"])
DEAD_LETTERS = Counter("reviewbus_dead_letters_total", "Messages sent to the DLQ", ["source"])
INFERENCE_SECONDS = Histogram(
    "reviewbus_inference_seconds", "Backend latency per request", ["version", "status"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_EVENTS = Histogram(
    "reviewbus_batch_events", "Events one hop took from its topic at once (streams/batching.py)",
    ["agent"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 5000),
)
SINK_ROWS = Counter("reviewbus_sink_rows_total", "Rows written to ClickHouse", ["outcome"])
GROUP_PARTITIONS = Gauge(
    "reviewbus_group_partitions",
    "Partitions assigned to a hop that reads with its own consumer group (the sink)",
    ["agent"])
GROUP_COMMITS_REFUSED = Counter(
    "reviewbus_group_commits_refused_total",
    "Batches handled but not committed (a rebalance took the partition): read again", ["agent"])
LIFECYCLE = Counter("reviewbus_lifecycle_events_total", "Lifecycle events emitted", ["action"])
VERSION_STATE = Gauge("reviewbus_version_traffic_percent", "Traffic share by version", ["version"])
TIMER_SECONDS = Histogram(
    "reviewbus_timer_seconds", "Duration of one tick of a timer (mostly its store queries)",
    ["timer"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TIMER_ERRORS = Counter("reviewbus_timer_errors_total",
                       "Exceptions caught by the guard of a timer or background task", ["timer"])
SHADOW_JOIN_PENDING = Gauge("reviewbus_shadow_join_pending",
                            "Requests the shadow join holds, waiting for more results")
SHADOW_JOIN_DROPPED = Counter("reviewbus_shadow_join_dropped_total",
                              "Shadow join entries dropped before every version answered",
                              ["reason"])

# The hops' consumer (streams/flows/hops.py) switches its fetch wait as Faust's does
# (infra/faust_compat.py adapt_fetch_wait), counted apart from Faust's.
HOPS_FETCH_WAIT_SWITCHES = Counter(
    "reviewbus_hops_fetch_wait_switches_total",
    "Times the inference and results hops' consumer changed its fetch wait: to the idle wait "
    "after a quiet spell, or back to the short one", ["to"])
for _to in ("idle", "short"):
    HOPS_FETCH_WAIT_SWITCHES.labels(to=_to)
HOPS_FETCH_WAIT_MS = Gauge("reviewbus_hops_fetch_wait_ms",
                           "The fetch.max.wait.ms of the hops' consumer's next fetch")

