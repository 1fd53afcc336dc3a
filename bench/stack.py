"""The embedded broker and real worker subprocesses for the benchmarks (like tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml

from agents.settings import Settings
from infra.procs import read_json, stop_pid

from .core import ROOT, rss_kib


class Broker:
    def __init__(self, home: Path) -> None:
        from infra.broker import start_embedded_broker

        self.home = home
        self.info = start_embedded_broker(home)
        self.address = self.info.address

    def stop(self) -> None:
        from infra.broker import stop_embedded_broker

        stop_embedded_broker(self.home)


class Worker:
    """One `python -m streams.worker` with its own chDB store, topic prefix and versions file."""

    def __init__(self, home: Path, broker: str, config: dict, partitions: int = 4,
                 extra_env: dict[str, str] | None = None, root: Path = ROOT) -> None:
        self.home = home
        self.root = root  # the checkout whose code the worker runs (bench/code_ab.py)
        home.mkdir(parents=True, exist_ok=True)
        self.prefix = f"b{uuid.uuid4().hex[:8]}."
        config_path = home / "versions.yaml"
        config_path.write_text(yaml.safe_dump(config))
        self.env = {
            "REVIEWBUS_HOME": str(home), "REVIEWBUS_KAFKA": broker,
            "REVIEWBUS_TOPIC_PREFIX": self.prefix, "REVIEWBUS_CONFIG": str(config_path),
            "REVIEWBUS_PARTITIONS": str(partitions), "REVIEWBUS_LOG_LEVEL": "warning",
            **(extra_env or {}),
        }
        self.settings = Settings(home=home, kafka=broker, topic_prefix=self.prefix,
                                 config=config_path, partitions=partitions)
        self.proc: subprocess.Popen | None = None
        self.web_url: str | None = None
        self._sampler: threading.Thread | None = None
        self._stop_sampling = threading.Event()
        self.rss_samples: list[int] = []

    def topic(self, short: str) -> str:
        return f"{self.prefix}{short}"

    def start(self, timeout: float = 120.0) -> None:
        from streams.services.stack import worker_health

        env = {**os.environ, **self.env}
        self._log = open(self.home / "worker.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams.worker"], env=env,
                                     cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_tail()}")
            info = read_json(self.home / "worker.json")
            health = worker_health(info) if info else None
            # Ready once the hops with groups of their own (the sink) joined too: a settle
            # (bench/pipeline.py) before that saw a still sink and let a paced run start into
            # the sink's join, which then stored its first seconds in one burst.
            if (health and health.get("status") == "ok"
                    and all((health.get("groups_joined") or {}).values())):
                self.web_url = info["web_url"]
                self._sampler = threading.Thread(target=self._sample, daemon=True)
                self._sampler.start()
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker not healthy in {timeout}s: {self.log_tail()}")

    def _sample(self) -> None:
        while not self._stop_sampling.wait(0.2):
            if self.proc is None or self.proc.poll() is not None:
                return
            cur, _ = rss_kib(self.proc.pid)
            if cur:
                self.rss_samples.append(cur)

    def peak_rss_mib(self) -> float | None:
        """Peak resident memory of the worker process so far (kernel VmHWM), in MiB."""
        if self.proc is None:
            return None
        _, peak = rss_kib(self.proc.pid)
        return round(peak / 1024, 1) if peak else None

    def rss_mib(self) -> float | None:
        if self.proc is None:
            return None
        cur, _ = rss_kib(self.proc.pid)
        return round(cur / 1024, 1) if cur else None

    def metric(self, name: str, **labels: str) -> float:
        """Sum of one Prometheus counter of the worker's /metrics, over matching labels."""
        with urllib.request.urlopen(f"{self.web_url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def query(self, sql: str) -> list[dict]:
        body = json.dumps({"sql": sql}).encode()
        headers = {"Content-Type": "application/json"}
        token = self.home / "store.token"  # the worker-hosted store's token (infra/clickhouse/auth.py)
        if token.exists():
            headers["Authorization"] = f"Bearer {token.read_text().strip()}"
        req = urllib.request.Request(f"{self.web_url}/store/query", data=body, method="POST",
                                     headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return [dict(zip(answer["columns"], r)) for r in answer["rows"]]

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The worker process stopped (SIGSTOP) meanwhile, so a ceiling measured beside it
        does not share the machine with its idle polls: an idle worker with the analyzer
        versions and its broker took 17 % of a core here. Keep it short: the broker drops a
        member silent past broker_session_timeout_s (10 s), and a rebalance would follow."""
        assert self.proc is not None and self.proc.poll() is None, "the worker is not running"
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self._stop_sampling.set()
        if self.proc and self.proc.poll() is None:
            stop_pid(self.proc.pid, grace_s=20)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.home / "worker.log").read_text(errors="replace")
                             .splitlines()[-n:])
        except OSError:
            return "(no log)"
