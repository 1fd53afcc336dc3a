"""ClickHouse: the store and everything around it.

- `sqlguard`   the read-only SQL guard (one statement, no INTO OUTFILE, no second FORMAT)
- `dsn`        DSNs and the secrets in them
- `errors`     library errors translated to reviewbus's (StoreUnavailable, is_unavailable)
- `protocol`   `StoreProtocol`, what every store offers, and `QueryResult`
- `store`      `Store`: clickhouse-connect on chDB (in this process) or a ClickHouse server
- `migrations` the numbered SQL files of infra/migrations/, applied once each
- `lock`       one process owns an embedded chDB directory
- `auth`       the worker-hosted store's token (<REVIEWBUS_HOME>/store.token)
- `served`     the worker-hosted store: its HTTP handlers and `RemoteStore`, their client
- `opening`    `open_store(settings)`: the right one of these, migrated
- `aio`        `AsyncStore`: any store for asyncio code, on one thread

`infra.store` re-exports the names the rest of the code has always imported from there.
"""
