"""Fixtures: a real Kafka-protocol broker (Tansu) and real workers with chDB, per test module."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from agents.settings import Settings
from infra.broker import start_embedded_broker, stop_embedded_broker
from infra.procs import read_json, stop_pid

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
# Every worker the tests start joins its consumer groups with Kafka's minimum session timeout,
# not the default 10 s: the embedded broker holds a JoinGroup for about half of it, so each
# start waits ~3 s less (a worker came up in 13.9 s with 10 s, 7.2 s with 4 s; there are
# dozens of starts in the suite). 6 s is valid on Apache Kafka too.
TEST_SESSION_TIMEOUT = {"REVIEWBUS_BROKER_SESSION_TIMEOUT_S": "6"}
os.environ.update({k: os.environ.get(k, v) for k, v in TEST_SESSION_TIMEOUT.items()})


def isolate_env(monkeypatch, home: Path, prefix: str) -> Path:
    """No REVIEWBUS_* setting of the caller leaks in: a home of its own, a fresh topic prefix."""
    for key in list(os.environ):
        if key.startswith("REVIEWBUS_") and key not in TEST_SESSION_TIMEOUT:
            monkeypatch.delenv(key)
    monkeypatch.setenv("REVIEWBUS_HOME", str(home))
    monkeypatch.setenv("REVIEWBUS_TOPIC_PREFIX", f"{prefix}{uuid.uuid4().hex[:6]}.")
    return home


def group_settings(tmp_path: Path) -> Settings:
    """For a test's own consumer groups: the worker's defaults but a 3 s session, so a test's
    second member joins in seconds on the embedded broker."""
    return Settings(home=tmp_path, broker_session_timeout_s=3.0, broker_heartbeat_interval_s=1.0)


@pytest.fixture
def store(tmp_path):
    """A migrated chDB store of the test's own (a module may define its own `store`)."""
    from infra.store import Store

    s = Store.connect(f"chdb://{tmp_path / 'ch'}")
    s.migrate()
    yield s
    s.close()


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> str:
    home = tmp_path_factory.mktemp("broker")
    info = start_embedded_broker(home)
    yield info.address
    stop_embedded_broker(home)


class Stack:
    """One worker process (all agents) on the shared broker, with its own store and topics."""

    def __init__(self, home: Path, broker: str, config: dict) -> None:
        self.home = home
        prefix = f"t{uuid.uuid4().hex[:8]}."
        config_path = home / "versions.yaml"
        home.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(config))
        self.env = {
            "REVIEWBUS_HOME": str(home), "REVIEWBUS_KAFKA": broker,
            "REVIEWBUS_TOPIC_PREFIX": prefix, "REVIEWBUS_CONFIG": str(config_path),
            "REVIEWBUS_PARTITIONS": "2", "REVIEWBUS_LOG_LEVEL": "info",
            "REVIEWBUS_SINK_WITHIN_S": "0.2",
        }
        self.settings = Settings(home=home, kafka=broker, topic_prefix=prefix,
                                 config=config_path, partitions=2)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> None:
        from streams.services.stack import worker_health

        env = {**os.environ, **self.env}
        self.log = open(self.home / "worker.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.worker"], env=env, cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_tail()}")
            info = read_json(self.home / "worker.json")
            health = worker_health(info) if info else None
            if health and health.get("status") == "ok":
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker not healthy in {timeout}s: {self.log_tail()}")

    def wait_groups_joined(self, timeout: float = 30.0) -> None:
        """Until the hops with consumer groups of their own (the sink) have their partitions
        (they join a few seconds after /health says ok; events wait in Kafka meanwhile)."""
        from streams.services.stack import worker_health

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = worker_health(read_json(self.home / "worker.json")) or {}
            if all((health.get("groups_joined") or {"": False}).values()):
                return
            time.sleep(0.2)
        raise AssertionError(f"the groups did not join in {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop_pid(self.proc.pid, grace_s=20)
            self.proc.wait(timeout=5)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.home / "worker.log").read_text(errors="replace")
                             .splitlines()[-n:])
        except OSError:
            return "(no log)"

    def query(self, sql: str) -> list[dict]:
        from infra.store import open_store

        with open_store(self.settings) as store:
            return store.query(sql).as_dicts()

    def wait_for(self, sql: str, predicate, timeout: float = 60.0, interval: float = 0.5):
        """Poll the store until predicate(rows) holds; return the rows (or fail with them)."""
        deadline = time.monotonic() + timeout
        rows: list[dict] = []
        while time.monotonic() < deadline:
            rows = self.query(sql)
            if predicate(rows):
                return rows
            time.sleep(interval)
        raise AssertionError(f"timed out waiting on {sql!r}; last rows: {rows[:5]}\n"
                             f"{self.log_tail()}")

    def settled(self, sql: str, pause: float = 1.5, tries: int = 20) -> list[dict]:
        """The rows of sql once two reads `pause` seconds apart agree (rows of work still in
        flight, e.g. a slow version's last answers, have reached the store)."""
        rows = self.query(sql)
        for _ in range(tries):
            time.sleep(pause)
            again = self.query(sql)
            if again == rows:
                return rows
            rows = again
        raise AssertionError(f"{sql!r} kept changing: last rows {rows[:5]}")


# A worker restarted in a test rejoins its group once the dead one's session expired: Kafka's
# minimum session timeout, not the default 10 s (every test worker has it now; the tests that
# restart workers still say so).
FAST_REJOIN = dict(TEST_SESSION_TIMEOUT)


def make_stack(tmp_path_factory, broker: str, config: dict, name: str,
               env: dict[str, str] | None = None) -> Stack:
    stack = Stack(tmp_path_factory.mktemp(name), broker, config)
    stack.env.update(env or {})
    stack.start()
    return stack
