"""reviewbus streams: the Faust app (`streams.app.create_app`), its topics, the flows, the CLI.

Importing any module of this package does no work: the worker builds the app explicitly
(streams/worker.py `run_worker`).
"""
