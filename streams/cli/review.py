"""`submit`, `findings`, `replay`, `demo`: commits in, findings out."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agents.config import load_config
from agents.errors import ReviewbusError
from agents.settings import Settings

from ..services import bus, stack
from ..services import demo as demo_steps
from ..services.common import parse_time, store_for
from ..services.replay import replay
from ..services.reports import COMPARE_COLUMNS, compare
from .render import (
    FINDINGS,
    Progress,
    add_format,
    findings_json,
    findings_text,
    render_table,
    summary,
    to_json,
    to_sarif,
)


def pull_request_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"not a pull request number: {text!r}")
    return number


def register(cmd) -> None:
    sp = cmd("submit", cmd_submit, "publish commits of a git repository for review")
    sp.add_argument("rev", nargs="?", help="REV or A..B (default: HEAD, or --last N)")
    sp.add_argument("--repo", type=Path, default=Path("."))
    sp.add_argument("--last", type=int, help="the last N commits")
    sp.add_argument("--pr", type=pull_request_number, help="pull request number")
    sp.add_argument("--wait", action="store_true", help="print the findings of these commits")
    sp.add_argument("--timeout", type=float, default=300.0)
    add_format(sp, FINDINGS)

    sp = cmd("findings", cmd_findings, "read the findings topic")
    sp.add_argument("--follow", action="store_true")
    add_format(sp, FINDINGS)

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


def _show(fmt: str):
    """Print one result as it comes (text, json); SARIF is one document at the end."""
    def show(r) -> None:
        if fmt != "sarif":
            print(findings_text(r) if fmt == "text" else findings_json(r), flush=True)
    return show


def cmd_submit(args, settings: Settings) -> int:
    from infra.gitsource import commit_events

    spec = args.rev if args.rev or args.last else "HEAD"
    events = commit_events(args.repo, spec, last=args.last, pull_request=args.pr)
    if not events:
        raise ReviewbusError("no commits to submit")
    results = asyncio.run(bus.submit(settings, events, wait=args.wait, timeout=args.timeout,
                                     on_result=_show(args.format)))
    if not args.wait:
        print(f"submitted {len(events)} commits", file=sys.stderr)
    elif args.format == "sarif":
        print(to_json(to_sarif(results)))
    return 0


def cmd_findings(args, settings: Settings) -> int:
    show = _show(args.format)

    async def read() -> list:
        out = []
        async for r in bus.follow_findings(settings, args.follow):
            if args.format == "sarif":
                out.append(r)
            else:
                show(r)
        return out

    results = asyncio.run(read())
    if args.format == "sarif":
        print(to_json(to_sarif(results)))
    return 0


def cmd_replay(args, settings: Settings) -> int:
    print(replay(settings, args.version, since=parse_time(args.since),
                 until=parse_time(args.until), limit=args.limit, wait=args.wait,
                 timeout=args.timeout, progress=Progress))
    return 0


def cmd_demo(args, settings: Settings) -> int:
    config = load_config(settings.config)
    was_running = stack.worker_info(settings) is not None
    print("starting the embedded stack (broker, ClickHouse, worker) ...", flush=True)
    stack.up(settings, detach=True)
    try:
        plan = demo_steps.plan(settings, config, args.repo, args.last)
        events = plan["events"]
        print(f"reviewing the last {len(events)} commits of {args.repo.resolve()} "
              f"with {len(plan['versions'])} versions ...", flush=True)
        if plan["unlisted"]:
            print(f"  also answering, registered earlier and not in "
                  f"{settings.config or 'the default file'}: {', '.join(plan['unlisted'])} "
                  "(`reviewbus versions archive ID` retires one)", flush=True)
        bar = Progress(len(events), "findings")
        results = asyncio.run(bus.submit(settings, events, wait=True, timeout=900,
                                         on_result=lambda r: bar.update()))
        bar.close()
        print(f"\n{summary(results)}\n")
        for m in demo_steps.wait_for_interactions(settings, config.task, plan["answering"],
                                                  progress=Progress):
            print(f"  {m['version_id']}: {m['stored']} of {m['expected']} answers stored "
                  f"({m['why']})", flush=True)
        with store_for(settings) as store:
            rows = compare(store, config.task, window_s=7 * 86400)
        print("version comparison (ClickHouse, last 7 days):")
        print(render_table(rows, COMPARE_COLUMNS))
    finally:
        if not args.keep and not was_running:
            stack.down(settings)
    return 0
