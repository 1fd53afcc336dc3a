"""The use cases behind the `reviewbus` commands: stack control, submitting and reading
findings, lifecycle commands, replay, the demo, reports, dead letters, feedback, training and
evaluation.

Plain functions that take Settings (and a store where needed) and return data; nothing here
prints or parses arguments (streams/cli does both). Imports flow cli -> services -> agents,
infra.
"""
