"""Stack control (`up`, `down`, `status`): the embedded stack's processes, and what they report."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from agents.errors import BrokerUnavailable, ReviewbusError
from agents.settings import Settings
from infra.broker import embedded_broker, find_broker, start_embedded_broker, stop_embedded_broker
from infra.config_file import load_config
from infra.kafka import consumer_lag, ensure_topics
from infra.procs import pid_alive, read_json, stop_pid

from .. import names
from ..supervisor import SUPERVISOR_FILE, SUPERVISOR_LOG, supervisor_state
from ..worker import WORKER_FILE, WORKERS_DIR


def worker_info(settings: Settings) -> dict | None:
    info = read_json(settings.home / WORKER_FILE)
    if info and pid_alive(int(info.get("pid", 0))):
        return info
    return None


def worker_health(info: dict, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(f"{info['web_url']}/health", timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 while starting still carries the body
        try:
            return json.loads(exc.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def up(settings: Settings, detach: bool, wait_s: float = 120.0, workers: int = 1) -> dict:
    """Start what is missing: embedded broker (unless REVIEWBUS_KAFKA), topics, worker(s).
    With workers > 1, a supervisor of that many workers of one app (in the foreground
    without `detach`): one consumer group, one store hosted by one of them."""
    settings.home.mkdir(parents=True, exist_ok=True)
    config = load_config(settings.config)
    started_broker = False
    if not settings.kafka and embedded_broker(settings.home) is None:
        start_embedded_broker(settings.home)
        started_broker = True
    bootstrap = find_broker(settings).address
    asyncio.run(ensure_topics(settings, bootstrap,
                              names.all_topics(settings, [v.id for v in config.versions])))
    if not detach:
        from ..supervisor import supervise
        from ..worker import run_worker

        try:
            return {"exit": run_worker(settings) if workers <= 1
                    else supervise(settings, workers)}
        finally:
            if started_broker:
                stop_embedded_broker(settings.home)
    sup = supervisor_state(settings.home)
    if sup and sup["running"]:  # already supervised: report it, start nothing
        info = wait_healthy(settings, int(sup["pid"]), wait_s, len(sup.get("workers") or [1]))
        return {"broker": bootstrap, "worker": info[0], "health": info[1],
                "supervisor": sup, "already_running": True}
    info = worker_info(settings)
    if info is not None:  # a worker without a supervisor (`reviewbus worker`): leave it be
        return {"broker": bootstrap, "worker": info, "health": worker_health(info),
                "supervisor": None, "already_running": True}
    (settings.home / SUPERVISOR_FILE).unlink(missing_ok=True)  # stale: a new one writes it
    pid = spawn_supervisor(settings, workers)
    info, health = wait_healthy(settings, pid, wait_s, workers)
    return {"broker": bootstrap, "worker": info, "health": health,
            "supervisor": supervisor_state(settings.home), "already_running": False}


def spawn_supervisor(settings: Settings, workers: int = 1) -> int:
    """`python -m streams.supervisor`, detached: it outlives `reviewbus up --detach`."""
    env = dict(os.environ, REVIEWBUS_HOME=str(settings.home.resolve()))
    with open(settings.home / SUPERVISOR_LOG, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streams.supervisor",
                                 "--workers", str(workers)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return proc.pid


def wait_healthy(settings: Settings, supervisor_pid: int, wait_s: float,
                 workers: int = 1) -> tuple[dict, dict]:
    """Until the supervisor's worker that hosts the store answers /health with ok, and as
    many of its workers as `workers` do: (worker.json, health). Fails at once when the
    supervisor exits (e.g. it gave up on a worker that dies at start-up)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        sup = read_json(settings.home / SUPERVISOR_FILE) or {}
        if not pid_alive(supervisor_pid):
            why = (sup.get("gave_up") if int(sup.get("pid") or 0) == supervisor_pid else None)
            raise ReviewbusError(
                f"the supervisor gave up: {why}" if why else
                f"the supervisor exited; last log line: {_tail(settings.home / SUPERVISOR_LOG)}")
        pids = {w.get("pid") for w in sup.get("workers", []) if w.get("alive")}
        current = read_json(settings.home / WORKER_FILE)
        if current and current.get("pid") in pids:
            health = worker_health(current)
            if health and health.get("status") == "ok" and (
                    workers <= 1 or healthy_workers(settings, pids) >= workers):
                return current, health
        time.sleep(0.3)
    raise ReviewbusError(f"the worker did not become healthy within {wait_s:g} s; "
                         f"see {settings.home / 'worker.log'} and "
                         f"{settings.home / SUPERVISOR_LOG}")


def announced_workers(settings: Settings) -> dict[int, dict]:
    """<home>/workers/<index>.json of the workers alive now: index -> {pid, web_url, ...}."""
    found = {}
    for path in sorted((settings.home / WORKERS_DIR).glob("*.json")):
        info = read_json(path)
        if info and info.get("pid") and pid_alive(int(info["pid"])):
            found[int(info.get("index", path.stem))] = info
    return found


def healthy_workers(settings: Settings, pids: set) -> int:
    return sum(1 for info in announced_workers(settings).values()
               if info.get("pid") in pids
               and (worker_health(info) or {}).get("status") == "ok")


def down(settings: Settings) -> dict:
    """The supervisor first (it stops its workers: SIGTERM, a grace period, SIGKILL), then
    any worker left (a killed supervisor's orphan, or `reviewbus worker`), then the broker."""
    stopped = {"supervisor": False, "worker": False, "broker": False}
    sup = supervisor_state(settings.home) or {}
    workers = sup.get("workers", [])
    if sup.get("running"):
        stopped["supervisor"] = stop_pid(int(sup["pid"]),
                                         grace_s=settings.supervisor_stop_grace_s + 10)
        stopped["worker"] = any(w.get("alive") for w in workers)
    pids = {int(w["pid"]) for w in workers if w.get("pid")}
    pids |= {int(w["pid"]) for w in announced_workers(settings).values()}
    info = read_json(settings.home / WORKER_FILE)
    if info and info.get("pid"):
        pids.add(int(info["pid"]))
        stopped["worker"] = True
    for pid in sorted(pids):
        if _is_worker(pid):
            stop_pid(pid, grace_s=settings.supervisor_stop_grace_s)
            stopped["worker"] = True
    (settings.home / SUPERVISOR_FILE).unlink(missing_ok=True)
    (settings.home / WORKER_FILE).unlink(missing_ok=True)
    for path in (settings.home / WORKERS_DIR).glob("*.json"):
        path.unlink(missing_ok=True)
    if not settings.kafka:
        stopped["broker"] = stop_embedded_broker(settings.home)
    return stopped


def status(settings: Settings) -> dict:
    config = load_config(settings.config)
    out: dict = {"home": str(settings.home), "store": settings.resolved_clickhouse()}
    try:
        bootstrap = find_broker(settings).address
        out["broker"] = {"address": bootstrap, "up": True}
    except BrokerUnavailable as exc:
        bootstrap = None
        out["broker"] = {"up": False, "error": str(exc)}
    info = worker_info(settings)
    health = worker_health(info) if info else None
    out["worker"] = {"running": info is not None, "pid": info and info.get("pid"),
                     "web_url": info and info.get("web_url"),
                     "status": health.get("status") if health else None}
    out.update(workers_status(settings, info))
    out["leader"] = leader_of(out["workers"])
    if out["workers"] and out["workers"][0].get("supervised"):
        first = out["workers"][0]
        out["worker"].update(uptime_s=first["uptime_s"], restarts=first["restarts"],
                             last_exit=first["last_exit"])
    if health:
        out["versions"] = health.get("versions", {})
    if bootstrap:
        # Intake, the hops (inference and results) and the sink read with groups of their own
        # (streams/group_consumer.py, streams/topic_streams.py); the worker group reads
        # failures; findings is for users.
        hops = [names.topic(settings, "results"),
                *(names.inference_topic(settings, v.id) for v in config.versions),
                names.pool_topic(settings)]

        async def lags() -> tuple[dict[str, int], dict[str, int]]:
            worker = await consumer_lag(settings, bootstrap, settings.resolved_app_id(),
                                        [names.topic(settings, "failures")])
            hop = await consumer_lag(settings, bootstrap, names.hops_group(settings), hops)
            intake = await consumer_lag(settings, bootstrap, names.intake_group(settings),
                                        names.input_topics(settings))
            return ({**intake, **hop, **worker},
                    await consumer_lag(settings, bootstrap, names.sink_group(settings),
                                       names.sink_topics(settings)))

        try:
            out["lag"], out["sink_lag"] = asyncio.run(lags())
        except ReviewbusError as exc:
            out["lag_error"] = str(exc)
    return out


def _is_worker(pid: int) -> bool:
    """Alive and a reviewbus worker still (a recorded pid may have been reused since)."""
    if not pid_alive(pid):
        return False
    try:
        return b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def workers_status(settings: Settings, info: dict | None, now: float | None = None) -> dict:
    """`supervisor` and per-worker `workers` of `reviewbus status`, from supervisor.json."""
    now = time.time() if now is None else now
    sup = supervisor_state(settings.home)
    if sup is None:  # nothing supervised: at most a worker `reviewbus worker` runs
        workers = [] if info is None else [
            {"index": 0, "pid": info.get("pid"), "alive": True, "state": "running",
             "uptime_s": None, "restarts": None, "last_exit": None, "supervised": False}]
        add_membership(settings, workers)
        return {"supervisor": {"running": False, "pid": None, "gave_up": None,
                               "stopped": None}, "workers": workers}
    workers = []
    for w in sup.get("workers", []):
        alive = bool(w.get("pid")) and sup["running"] and pid_alive(int(w["pid"]))
        started = w.get("started_at")
        workers.append({
            "index": w.get("index"), "pid": w.get("pid") if alive else None, "alive": alive,
            "state": (w.get("state") if sup["running"] or w.get("state") == "gave_up"
                      else "stopped"),
            "started_at": started,
            "uptime_s": round(now - started, 1) if alive and started else None,
            "restarts": w.get("restarts", 0), "last_exit": w.get("last_exit"),
            "next_start_at": w.get("next_start_at") if sup["running"] else None,
            "gave_up": w.get("gave_up"), "supervised": True})
    add_membership(settings, workers)
    started = sup.get("started_at")
    return {"supervisor": {
        "running": sup["running"], "pid": sup.get("pid"),
        "uptime_s": round(now - started, 1) if sup["running"] and started else None,
        "gave_up": sup.get("gave_up"),
        "stopped": sup.get("stopped") or (None if sup["running"] else
                                          "not running (stale supervisor.json)"),
        "log": sup.get("log"), "policy": sup.get("policy")}, "workers": workers}


def add_membership(settings: Settings, workers: list[dict]) -> None:
    """Each alive worker's `partitions`, `leader` and `hosts_store`, from its /health."""
    announced = {int(i["pid"]): i for i in announced_workers(settings).values()}
    for w in workers:
        info = announced.get(int(w["pid"])) if w.get("pid") and w.get("alive") else None
        health = worker_health(info) if info else None
        w["partitions"] = (health or {}).get("partitions") if health else None
        w["leader"] = bool(health and health.get("leader"))
        w["hosts_store"] = bool(health and health.get("hosts_store"))


def leader_of(workers: list[dict]) -> dict | None:
    leaders = [w for w in workers if w.get("leader")]
    if not leaders:
        return None
    # Two at once is possible for a moment (a stopped leader that has not seen the
    # rebalance yet): report them all, the decisions are fenced (docs/operations/failure-modes.md)
    return {"index": leaders[0]["index"], "pid": leaders[0]["pid"],
            "also_claiming": [w["pid"] for w in leaders[1:]]}


def _tail(path, lines: int = 1) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
