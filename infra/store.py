"""The ClickHouse store, as the rest of reviewbus imports it: re-exports of infra.clickhouse.

The code lives in the `infra/clickhouse/` package (one module per concern, see its
docstring); this module keeps `from infra.store import ...` working.
"""

from __future__ import annotations

from infra.clickhouse.aio import AsyncStore
from infra.clickhouse.auth import TOKEN_FILE, ensure_token, read_token
from infra.clickhouse.dsn import chdb_path, redact_dsn
from infra.clickhouse.errors import (
    TRANSIENT_CODES,
    StoreUnauthorized,
    StoreUnavailable,
    is_unavailable,
)
from infra.clickhouse.lock import StoreLock
from infra.clickhouse.migrations import MIGRATION_FILE, MIGRATIONS_DIR, SCHEMA_MIGRATIONS_DDL
from infra.clickhouse.opening import open_store
from infra.clickhouse.protocol import QueryResult, StoreProtocol, jsonable
from infra.clickhouse.served import (
    EVENT_TYPES,
    REMOTE_TIMEOUT_S,
    RemoteStore,
    handle_insert_request,
    handle_query_request,
    serve_store_request,
)
from infra.clickhouse.sqlguard import one_statement, split_statements
from infra.clickhouse.store import SEEN_IDS_MAX, Store

__all__ = [
    "EVENT_TYPES", "MIGRATIONS_DIR", "MIGRATION_FILE", "REMOTE_TIMEOUT_S", "SCHEMA_MIGRATIONS_DDL",
    "SEEN_IDS_MAX", "TOKEN_FILE", "TRANSIENT_CODES", "AsyncStore", "QueryResult", "RemoteStore",
    "Store", "StoreLock", "StoreProtocol", "StoreUnauthorized", "StoreUnavailable", "chdb_path",
    "ensure_token", "handle_insert_request", "handle_query_request", "is_unavailable", "jsonable",
    "one_statement", "open_store", "read_token", "redact_dsn", "serve_store_request",
    "split_statements",
]
