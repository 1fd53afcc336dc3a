"""reviewbus streams: the one Faust app, its topics and tables, the agents' bindings, the CLI.

Importing `streams.app` builds the app from the environment (REVIEWBUS_*); the CLI imports it
only for `reviewbus worker`.
"""
