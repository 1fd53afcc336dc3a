"""The `reviewbus` command: a thin layer of commands and renderers over streams/services."""

from __future__ import annotations

import argparse
import sys

from agents.errors import ReviewbusError
from agents.settings import load_settings

from . import learning, lifecycle, ops, reports, review, stack

# Each group adds its subcommands through `register(cmd)`, where `cmd(name, func, help)`
# returns the subparser and func is called as func(args, settings).
GROUPS = (stack, review, reports, lifecycle, ops, learning)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reviewbus", description=__doc__)
    sub = p.add_subparsers(title="commands")

    def cmd(name: str, func, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        return sp

    for group in GROUPS:
        group.register(cmd)
    return p


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


__all__ = ["build_parser", "main"]
