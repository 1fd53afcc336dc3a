"""ClickHouse and client errors translated into reviewbus's own (agents/errors.py).

Every implementation of the store raises StoreError (or one of its subclasses) and nothing
else: callers catch one root, `ReviewbusError`, and never a library's exception type.
"""

from __future__ import annotations

import re

from agents.errors import StoreBusy, StoreError

__all__ = ["StoreBusy", "StoreError", "StoreUnavailable", "TRANSIENT_CODES", "is_unavailable"]


class StoreUnavailable(StoreError):
    """ClickHouse cannot be reached right now (not a problem of the data): retry later."""


class StoreUnauthorized(StoreError):
    """The worker-hosted store refused a request without its token (<home>/store.token)."""


# ClickHouse error codes that say "not now" rather than "not these rows": timeouts, network,
# too many queries or parts, memory, read-only replicas, keeper trouble; and a store not set up
# for the rows (60 unknown table, 115 unknown setting: a table or view missing, a server too old
# for migration 015), which every row would fail alike: the sink holds them and retries rather
# than dead-letter the whole stream one row at a time.
TRANSIENT_CODES = frozenset({3, 60, 115, 159, 164, 202, 203, 209, 210, 241, 242, 252, 319, 425,
                             999})
_CODE = re.compile(r"(?:\bcode:?\s*|error code\s+)(\d+)", re.IGNORECASE)


def is_unavailable(exc: BaseException) -> bool:
    """True when a client error means the server cannot take rows right now (retry them all),
    False when the rows themselves were refused (isolate the bad one). By type (connection
    errors, clickhouse_connect's OperationalError) or by the first ClickHouse error code in
    the message; never by other words of it, which may quote the rows' own text."""
    from clickhouse_connect.driver.exceptions import OperationalError

    if isinstance(exc, StoreUnavailable | OSError | OperationalError):
        return True
    match = _CODE.search(str(exc))
    return match is not None and int(match.group(1)) in TRANSIENT_CODES
