"""ClickHouse storage: numbered migrations, event-to-row mapping, and the Store."""
