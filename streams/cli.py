"""The `reviewbus` command: a thin layer over the functions the agents and workers use."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agents.errors import ReviewbusError
from agents.settings import Settings, load_settings

FORMATS_FINDINGS = ("text", "json", "sarif")
# Modules that add their own subcommands: each has `add_commands(cmd)`, where
# `cmd(name, func, help)` returns the subparser (func is called as func(args, settings)).
COMMAND_MODULES: tuple[str, ...] = ("streams.lifecycle", "streams.ops_cli", "streams.ml_cli")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args, load_settings()) or 0
    except ReviewbusError as exc:
        print(f"reviewbus: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def pull_request_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"not a pull request number: {text!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reviewbus", description=__doc__)
    sub = p.add_subparsers(title="commands")

    def cmd(name: str, func, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    sp = cmd("up", cmd_up, "start the embedded broker (unless REVIEWBUS_KAFKA), store, worker")
    sp.add_argument("--detach", action="store_true", help="run in the background")
    cmd("down", cmd_down, "stop what `up --detach` started")
    sp = cmd("status", cmd_status, "broker, store, worker, versions, consumer lag")
    sp.add_argument("--format", choices=("text", "json"), default="text")
    cmd("worker", cmd_worker, "run one Faust worker with every agent (foreground)")

    sp = cmd("submit", cmd_submit, "publish commits of a git repository for review")
    sp.add_argument("rev", nargs="?", help="REV or A..B (default: HEAD, or --last N)")
    sp.add_argument("--repo", type=Path, default=Path("."))
    sp.add_argument("--last", type=int, help="the last N commits")
    sp.add_argument("--pr", type=pull_request_number, help="pull request number")
    sp.add_argument("--wait", action="store_true", help="print the findings of these commits")
    sp.add_argument("--timeout", type=float, default=300.0)
    sp.add_argument("--format", choices=FORMATS_FINDINGS, default="text")

    sp = cmd("findings", cmd_findings, "read the findings topic")
    sp.add_argument("--follow", action="store_true")
    sp.add_argument("--format", choices=FORMATS_FINDINGS, default="text")

    sp = cmd("compare", cmd_compare, "compare versions from ClickHouse")
    sp.add_argument("versions", nargs="*")
    sp.add_argument("--window", default="24h")
    sp.add_argument("--run", dest="run_id")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    sp.add_argument("--plot", type=Path, metavar="FILE.png",
                    help="also draw each version over time, state changes marked")

    sp = cmd("sql", cmd_sql, "read-only SQL on the store")
    sp.add_argument("query")
    sp.add_argument("--format", choices=("table", "json"), default="table")

    sp = cmd("versions", cmd_versions, "versions, their states and traffic; lifecycle commands")
    sp.add_argument("--format", choices=("table", "json"), default="table")
    from .lifecycle import add_version_commands

    add_version_commands(sp)  # versions register|promote|demote|rollback|... (issue 3)

    sp = cmd("replay", cmd_replay, "re-send archived input events to one version as a run")
    sp.add_argument("--to", dest="version", required=True)
    sp.add_argument("--since", help="ISO time or age like 2h")
    sp.add_argument("--until", help="ISO time or age like 10m")
    sp.add_argument("--limit", type=int)
    sp.add_argument("--wait", action="store_true", help="wait until every result is stored")
    sp.add_argument("--timeout", type=float, default=600.0)

    sp = cmd("demo", cmd_demo, "the main job: review the last commits of a repository")
    sp.add_argument("--repo", type=Path, default=Path("."))
    sp.add_argument("--last", type=int, default=50)
    sp.add_argument("--keep", action="store_true", help="leave the stack running afterwards")

    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(cmd)
    return p


def cmd_up(args, settings: Settings) -> int:
    from .control import up

    result = up(settings, detach=args.detach)
    if args.detach:
        versions = (result["health"] or {}).get("versions", {})
        sup = result.get("supervisor")
        print(f"reviewbus is up: broker {result['broker']}, worker pid {result['worker']['pid']}, "
              f"versions {versions}")
        if sup is None:
            print("note: this worker runs without a supervisor (not started by `up --detach`); "
                  "`reviewbus down` then `reviewbus up --detach` to supervise it")
        elif result.get("already_running"):
            print(f"already running: supervisor pid {sup['pid']}; not starting another")
        else:
            print(f"supervisor pid {sup['pid']} restarts the worker if it fails; "
                  f"log: {sup.get('log')}")
        return 0
    return int(result.get("exit", 0))


def cmd_down(args, settings: Settings) -> int:
    from .control import down

    stopped = down(settings)
    print("stopped: " + ", ".join(k for k, v in stopped.items() if v) if any(stopped.values())
          else "nothing was running")
    return 0


def cmd_status(args, settings: Settings) -> int:
    from .control import status

    info = status(settings)
    if args.format == "json":
        print(json.dumps(info, indent=2, default=str))
        return 0
    b, w = info["broker"], info["worker"]
    print(f"broker:   {'up at ' + b['address'] if b['up'] else 'down (' + b['error'] + ')'}")
    print(f"store:    {info['store']}")
    print(f"worker:   {'pid ' + str(w['pid']) + ' ' + str(w['status']) if w['running'] else 'not running'}")
    for line in supervision_lines(info):
        print(line)
    for v, state in info.get("versions", {}).items():
        print(f"version:  {v} {state}")
    for topic, lag in sorted(info.get("lag", {}).items()):
        print(f"lag:      {topic} {lag}")
    return 0


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return (f"{s // 86400}d{s % 86400 // 3600}h" if s >= 86400 else
            f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else
            f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def supervision_lines(info: dict) -> list[str]:
    """The supervisor's state and one line per worker: pid, uptime, restarts, last exit."""
    sup, workers = info.get("supervisor") or {}, info.get("workers") or []
    if sup.get("running"):
        lines = [f"supervisor: pid {sup['pid']}, up {duration(sup.get('uptime_s'))}"]
    elif sup.get("gave_up"):
        lines = [f"supervisor: gave up: {sup['gave_up']}"]
    elif sup.get("stopped"):
        lines = [f"supervisor: {sup['stopped']}"]
    else:
        lines = ["supervisor: none (start one with `reviewbus up --detach`)"]
    for w in workers:
        if not w.get("supervised"):
            continue
        n = w.get("restarts") or 0
        state = (f"pid {w['pid']} alive, up {duration(w.get('uptime_s'))}" if w.get("alive")
                 else str(w.get("state")))
        last = w.get("last_exit")
        lines.append(f"worker {w['index']}: {state}, {n} restart{'s' if n != 1 else ''}"
                     + (f", last exit: {last['reason']} ({last.get('log', '')})" if last else ""))
    return lines


def cmd_worker(args, settings: Settings) -> int:
    from .worker import run_worker

    return run_worker(settings)


def cmd_submit(args, settings: Settings) -> int:
    from infra.gitsource import commit_events

    from .client import submit
    from .output import findings_json, findings_text
    from .sarif import to_sarif

    spec = args.rev if args.rev or args.last else "HEAD"
    events = commit_events(args.repo, spec, last=args.last, pull_request=args.pr)
    if not events:
        raise ReviewbusError("no commits to submit")

    def show(r) -> None:
        if args.format == "text":
            print(findings_text(r), flush=True)
        elif args.format == "json":
            print(findings_json(r), flush=True)

    results = asyncio.run(submit(settings, events, wait=args.wait, timeout=args.timeout,
                                 on_result=show))
    if not args.wait:
        print(f"submitted {len(events)} commits", file=sys.stderr)
    elif args.format == "sarif":
        print(json.dumps(to_sarif(results), indent=2))
    return 0


def cmd_findings(args, settings: Settings) -> int:
    from .client import follow_findings
    from .output import findings_json, findings_text
    from .sarif import to_sarif

    async def read() -> list:
        out = []
        async for r in follow_findings(settings, args.follow):
            if args.format == "sarif":
                out.append(r)
            else:
                print(findings_text(r) if args.format == "text" else findings_json(r), flush=True)
        return out

    results = asyncio.run(read())
    if args.format == "sarif":
        print(json.dumps(to_sarif(results), indent=2))
    return 0


@contextlib.contextmanager
def store_for(settings: Settings):
    """The local store when free; else the running worker's, through its web port."""
    from infra.store import Store, open_store

    store = open_store(settings)
    try:
        yield store
    finally:
        if isinstance(store, Store):
            store.close()


def cmd_compare(args, settings: Settings) -> int:
    from agents.config import load_config

    from .reports import COMPARE_COLUMNS, compare, parse_window, render_table

    task = load_config(settings.config).task
    with store_for(settings) as store:
        rows = compare(store, task, parse_window(args.window), args.run_id, args.versions)
        if getattr(args, "plot", None):
            from .plot import plot_rollout

            plot_rollout(store, task, parse_window(args.window), args.plot, args.versions)
            print(f"plot written to {args.plot}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows, COMPARE_COLUMNS))
    return 0


def cmd_sql(args, settings: Settings) -> int:
    from .reports import render_table

    with store_for(settings) as store:
        result = store.query(args.query, readonly=True)
    rows = result.as_dicts()
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(render_table(rows, result.columns))
    return 0


def cmd_versions(args, settings: Settings) -> int:
    from .reports import render_table, versions_rows

    registry = current_registry(settings)
    rows = versions_rows(registry)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows))
    return 0


def current_registry(settings: Settings):
    """From the lifecycle topic when a broker runs, else from the store's history."""
    from agents.config import load_config
    from agents.errors import BrokerUnavailable
    from agents.registry import fold
    from infra.broker import find_broker
    from infra.kafka import read_to_end
    from infra.readback import registry_from_store
    from schemas import LifecycleEvent

    from . import names

    task = load_config(settings.config).task
    try:
        bootstrap = find_broker(settings).address
        raw = asyncio.run(read_to_end(settings, bootstrap, names.topic(settings, "lifecycle")))
        registry = fold(task, [LifecycleEvent.model_validate_json(v) for v in raw])
        if registry.versions:
            return registry
    except BrokerUnavailable:
        pass
    with store_for(settings) as store:
        return registry_from_store(store, task)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    from .reports import parse_window

    try:
        when = datetime.fromisoformat(text)
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC) - timedelta(seconds=parse_window(text))


def cmd_replay(args, settings: Settings) -> int:
    from .replay import replay

    run_id = replay(settings, args.version, since=parse_time(args.since),
                    until=parse_time(args.until), limit=args.limit, wait=args.wait,
                    timeout=args.timeout)
    print(run_id)
    return 0


def cmd_demo(args, settings: Settings) -> int:
    from .demo import demo

    return demo(settings, repo=args.repo, last=args.last, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
