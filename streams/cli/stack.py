"""`up`, `down`, `status`, `worker`: the stack's processes."""

from __future__ import annotations

from agents.settings import Settings

from ..services import stack
from .render import add_format, to_json


def register(cmd) -> None:
    sp = cmd("up", cmd_up, "start the embedded broker (unless REVIEWBUS_KAFKA), store, worker")
    sp.add_argument("--detach", action="store_true", help="run in the background")
    sp.add_argument("--workers", type=int, default=1, metavar="N",
                    help="N supervised workers of one app: one consumer group, one store "
                         "(at most the topics' partition count do work)")
    cmd("down", cmd_down, "stop what `up --detach` started")
    add_format(cmd("status", cmd_status, "broker, store, worker, versions, consumer lag"),
               ("text", "json"))
    cmd("worker", cmd_worker, "run one Faust worker with every agent (foreground)")


def cmd_up(args, settings: Settings) -> int:
    if args.workers < 1:
        print("reviewbus: --workers must be at least 1")
        return 2
    result = stack.up(settings, detach=args.detach, workers=args.workers)
    if not args.detach:
        return int(result.get("exit", 0))
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
        n = len(sup.get("workers") or [])
        print(f"supervisor pid {sup['pid']} restarts the worker{'s' if n > 1 else ''} if "
              f"{'one' if n > 1 else 'it'} fails; log: {sup.get('log')}")
    return 0


def cmd_down(args, settings: Settings) -> int:
    stopped = stack.down(settings)
    print("stopped: " + ", ".join(k for k, v in stopped.items() if v) if any(stopped.values())
          else "nothing was running")
    return 0


def cmd_status(args, settings: Settings) -> int:
    info = stack.status(settings)
    if args.format == "json":
        print(to_json(info))
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
    for topic, lag in sorted(info.get("sink_lag", {}).items()):
        print(f"lag:      {topic} {lag} (sink)")
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
        roles = [r for r, on in (("leader", w.get("leader")), ("store host", w.get("hosts_store")))
                 if on]
        parts = w.get("partitions")
        lines.append(f"worker {w['index']}: {state}, {n} restart{'s' if n != 1 else ''}"
                     + (f", {len(parts)} partitions" if parts is not None else "")
                     + (f", {' and '.join(roles)}" if roles else "")
                     + (f", last exit: {last['reason']} ({last.get('log', '')})" if last else ""))
    return lines


def cmd_worker(args, settings: Settings) -> int:
    from ..worker import run_worker

    return run_worker(settings)
