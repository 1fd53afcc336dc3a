"""`submit`, `findings`, `replay`, `demo`: commits in, findings out."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agents.errors import ReviewbusError
from agents.settings import Settings
from infra.config_file import load_config
from schemas import Severity

from ..services import bus, stack
from ..services import demo as demo_steps
from ..services.common import parse_time, store_for
from ..services.replay import replay
from ..services.reports import COMPARE_COLUMNS, compare
from .ci import (
    EXIT_FINDINGS,
    EXIT_NOT_REVIEWED,
    gate,
    summary_md,
    to_github,
    to_gitlab,
    to_rdjsonl,
)
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


SUBMIT_EPILOG = f"""\
exit codes (with --wait, --fail-on or --report):
  0  reviewed; no finding at or above --fail-on (or no --fail-on)
  {EXIT_FINDINGS}  a served finding at or above --fail-on (reviewdog's -fail-level)
  2  bad arguments
  {EXIT_NOT_REVIEWED}  reviewbus could not review: no broker, --timeout passed, no commits, or a
     commit was answered with an error status (and no finding reached --fail-on)
without --wait: 0 published, 1 an error (no broker, no commits)
"""


def report_target(text: str) -> tuple[str, Path]:
    """`FORMAT:FILE` of --report: a format of FINDINGS and the file it is written to."""
    fmt, sep, path = text.partition(":")
    if not sep or fmt not in FINDINGS or not path:
        raise argparse.ArgumentTypeError(
            f"--report wants FORMAT:FILE with FORMAT one of {', '.join(FINDINGS)}; got {text!r}")
    return fmt, Path(path)


def add_reports(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--report", type=report_target, action="append", default=[],
                    metavar="FORMAT:FILE",
                    help="also write the findings as FORMAT to FILE (repeatable; e.g. "
                         "sarif:reviewbus.sarif for code scanning beside --format github)")
    sp.add_argument("--summary-md", type=Path, metavar="FILE",
                    help="append a Markdown summary to FILE (e.g. $GITHUB_STEP_SUMMARY)")


def register(cmd) -> None:
    sp = cmd("submit", cmd_submit, "publish commits of a git repository for review")
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
    sp.epilog = SUBMIT_EPILOG
    sp.add_argument("rev", nargs="?", help="REV or A..B (default: HEAD, or --last N)")
    sp.add_argument("--repo", type=Path, default=Path("."))
    sp.add_argument("--last", type=int, help="the last N commits")
    sp.add_argument("--pr", type=pull_request_number, help="pull request number")
    sp.add_argument("--wait", action="store_true", help="print the findings of these commits")
    sp.add_argument("--timeout", type=float, default=300.0)
    sp.add_argument("--fail-on", type=Severity, choices=list(Severity), metavar="LEVEL",
                    help="exit 1 when a served finding is at or above LEVEL: info, low, medium, "
                         "high, critical (implies --wait)")
    add_format(sp, FINDINGS)
    add_reports(sp)

    sp = cmd("findings", cmd_findings, "read the findings topic")
    sp.add_argument("--follow", action="store_true")
    add_format(sp, FINDINGS)
    add_reports(sp)

    sp = cmd("replay", cmd_replay, "re-send archived input events to one version as a run")
    sp.add_argument("--to", dest="version", required=True)
    sp.add_argument("--since", help="ISO time or age like 2h")
    sp.add_argument("--until", help="ISO time or age like 10m")
    sp.add_argument("--limit", type=int,
                    help="at most this many requests: the oldest of the range first")
    sp.add_argument("--wait", action="store_true", help="wait until every result is stored")
    sp.add_argument("--timeout", type=float, default=600.0)

    sp = cmd("demo", cmd_demo, "the main job: review the last commits of a repository")
    sp.add_argument("--repo", type=Path, default=Path("."))
    sp.add_argument("--last", type=int, default=50)
    sp.add_argument("--keep", action="store_true", help="leave the stack running afterwards")


STREAMED = ("text", "json", "rdjsonl", "github")  # one result at a time; the rest at the end


def _show(fmt: str):
    """Print one result as it comes (text, json, rdjsonl, github); SARIF and GitLab are one
    document at the end (`_finish`)."""
    def show(r) -> None:
        if fmt not in STREAMED:
            return
        out = render_findings(fmt, [r])
        if out:
            print(out, flush=True)
    return show


def render_findings(fmt: str, results: list) -> str:
    """All results in one format, as one text (the --report files)."""
    if fmt == "sarif":
        return to_json(to_sarif(results))
    if fmt == "gitlab":
        return to_json(to_gitlab(results))
    if fmt == "rdjsonl":
        return to_rdjsonl(results)
    if fmt == "github":
        return to_github(results)
    show = findings_json if fmt == "json" else findings_text
    return "\n".join(show(r) for r in results)


def _finish(args, results: list) -> None:
    if args.format in ("sarif", "gitlab"):
        print(render_findings(args.format, results))
    for fmt, path in args.report:
        text = render_findings(fmt, results)
        path.write_text(text + "\n" if text else "", encoding="utf-8")
    if args.summary_md is not None:
        _append(args.summary_md, summary_md(results, getattr(args, "fail_on", None)))


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text + "\n")


def cmd_submit(args, settings: Settings) -> int:
    from infra.gitsource import commit_events

    wait = args.wait or args.fail_on is not None or bool(args.report)
    spec = args.rev if args.rev or args.last else "HEAD"
    try:
        events = commit_events(args.repo, spec, last=args.last, pull_request=args.pr)
        if not events:
            raise ReviewbusError("no commits to submit")
        results = asyncio.run(bus.submit(settings, events, wait=wait, timeout=args.timeout,
                                         on_result=_show(args.format)))
    except ReviewbusError as exc:
        if not wait:
            raise  # exit 1, as before
        print(f"reviewbus: {exc}", file=sys.stderr)
        if args.summary_md is not None:
            _append(args.summary_md, f"## reviewbus\n\nNot reviewed: {exc}\n")
        return EXIT_NOT_REVIEWED
    if not wait:
        print(f"submitted {len(events)} commits", file=sys.stderr)
        return 0
    try:
        _finish(args, results)
    except OSError as exc:  # a report file that cannot be written: no verdict to trust
        print(f"reviewbus: cannot write a report: {exc}", file=sys.stderr)
        return EXIT_NOT_REVIEWED
    return gate(results, args.fail_on)


def cmd_findings(args, settings: Settings) -> int:
    show = _show(args.format)

    async def read() -> list:
        out = []
        async for r in bus.follow_findings(settings, args.follow):
            if args.format not in STREAMED or args.summary_md is not None or args.report:
                out.append(r)
            show(r)
        return out

    results = asyncio.run(read())
    _finish(args, results)
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
