"""reviewbus agents: the logic of each agent (pure decisions apart from I/O) and backends."""
