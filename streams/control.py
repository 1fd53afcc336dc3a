"""`reviewbus up|down|status`: the embedded stack's processes, and what they report."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from agents.config import load_config
from agents.errors import BrokerUnavailable, ReviewbusError
from agents.settings import Settings
from infra.broker import embedded_broker, find_broker, start_embedded_broker, stop_embedded_broker
from infra.kafka import consumer_lag, ensure_topics
from infra.procs import pid_alive, read_json, stop_pid

from . import names
from .worker import WORKER_FILE


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


def up(settings: Settings, detach: bool, wait_s: float = 120.0) -> dict:
    """Start what is missing: embedded broker (unless REVIEWBUS_KAFKA), topics, worker."""
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
        from .worker import run_worker

        try:
            return {"exit": run_worker(settings)}
        finally:
            if started_broker:
                stop_embedded_broker(settings.home)
    info = worker_info(settings)
    if info is None:
        info = spawn_worker(settings)
    health = wait_healthy(settings, info, wait_s)
    return {"broker": bootstrap, "worker": info, "health": health}


def spawn_worker(settings: Settings) -> dict:
    env = dict(os.environ, REVIEWBUS_HOME=str(settings.home.resolve()))
    log = open(settings.home / "worker.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "streams.worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    return {"pid": proc.pid}


def wait_healthy(settings: Settings, info: dict, wait_s: float) -> dict:
    deadline = time.monotonic() + wait_s
    pid = int(info["pid"])
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            tail = _tail(settings.home / "worker.log")
            raise ReviewbusError(f"the worker exited during start-up; last log line: {tail}")
        current = read_json(settings.home / WORKER_FILE)
        if current and int(current.get("pid", 0)) == pid:
            health = worker_health(current)
            if health and health.get("status") == "ok":
                return health
        time.sleep(0.3)
    raise ReviewbusError(f"the worker did not become healthy within {wait_s:g} s; "
                         f"see {settings.home / 'worker.log'}")


def down(settings: Settings) -> dict:
    info = read_json(settings.home / WORKER_FILE)
    stopped = {"worker": False, "broker": False}
    if info and info.get("pid"):
        stopped["worker"] = stop_pid(int(info["pid"]), grace_s=20)
        (settings.home / WORKER_FILE).unlink(missing_ok=True)
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
    if health:
        out["versions"] = health.get("versions", {})
    if bootstrap:
        # findings is for users; the worker group does not consume it.
        topic_names = [t for t in names.all_topics(settings, [v.id for v in config.versions])
                       if t != names.topic(settings, "findings")]
        try:
            out["lag"] = asyncio.run(consumer_lag(settings, bootstrap,
                                                  settings.resolved_app_id(), topic_names))
        except ReviewbusError as exc:
            out["lag_error"] = str(exc)
    return out


def _tail(path, lines: int = 1) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
