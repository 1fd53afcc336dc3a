"""One root exception. Library errors are translated at the boundary: `raise X(...) from exc`."""


class ReviewbusError(Exception):
    """Root of every error reviewbus raises on purpose. The CLI prints it as one line."""


class ConfigError(ReviewbusError):
    """Bad settings or version file."""


class InvalidEvent(ReviewbusError):
    """An input message that cannot be accepted; it goes to the dead-letter topic."""


class BrokerUnavailable(ReviewbusError):
    """No Kafka broker at the configured address."""


class StoreError(ReviewbusError):
    """ClickHouse could not be opened, queried or written."""


class StoreBusy(StoreError):
    """Another process holds the embedded chDB store and does not answer for it."""


class UnknownVersion(ReviewbusError):
    """A version id that the registry does not know."""


class IllegalTransition(ReviewbusError):
    """A lifecycle change that the state machine does not allow."""


class BackendError(ReviewbusError):
    """A model backend failed on a request."""


class InvalidOutput(BackendError):
    """A backend answered, but not in the shared output schema."""
