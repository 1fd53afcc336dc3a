"""`python -m bench soak [--minutes 60] [--rate R]`: a worker under steady load for a long time.

The embedded stack as a user starts it (`reviewbus up --detach`: broker, supervisor, worker)
with the default versions (analyzers-v1 stable, analyzers-v2 and minilm-lora-v1 in shadow) plus
one fake shadow that starts failing halfway, so it is quarantined and the re-test and error
budget timers query too. The accuracy-regression trigger is off, so that the real shadows,
whose change-type accuracy is below the stable one's on these commits, stay in shadow for the
whole run (the shape under test). Real commits of the shared dataset (post-images rebuilt from
their diffs, as in bench/analyzers.py; synthetic ones where it is missing) arrive at a constant
rate, cycled with fresh event ids; a false-positive verdict on a served finding is sent every
sample. Every `--sample-s` (60) it records: commits sent and
served, the backlog, end-to-end p50/p99 (a commit's send to its findings' CreateTime), the
worker's RSS, the store's rows, each timer's mean tick time, and the supervisor's restarts.

Writes bench/results/soak-<time>[-label].json and .png, and prints first against last
`--edge-min` minutes as ratios (the figures of the long-running worker issue).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from agents.config import DEFAULT_CONFIG
from agents.settings import Settings
from infra.broker import embedded_broker
from infra.kafka import start_producer, start_tail_consumer
from infra.procs import read_json
from schemas import CommitEvent, Feedback

from . import load
from .core import ROOT, machine_info, rss_kib
from .soak_report import percentile, plot, summary

FLAKY = "soak-flaky"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=4.0, help="commits per second")
    p.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--edge-min", type=float, default=10.0,
                   help="minutes compared at the start and at the end")
    p.add_argument("--retest-after-s", type=float, default=300.0,
                   help="the flaky version's first re-test after its quarantine")
    p.add_argument("--label", default=None)
    p.add_argument("--keep", action="store_true", help="keep the stack's directory")
    return p.parse_args(argv)


def soak_config(home: Path, retest_after_s: float) -> Path:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["versions"].append({
        "id": FLAKY, "backend": "fake", "initial_state": "shadow", "timeout_s": 30,
        "params": {"label": "feature", "findings": 1, "fail_while_file": str(home / "flaky.fail")}})
    quarantine = config.setdefault("quarantine", {})
    quarantine["retest_after_s"] = retest_after_s
    quarantine["triggers"] = ["consecutive_failures", "error_rate", "invalid_output",
                              "latency_slo", "crash_loop", "error_budget"]
    path = home / "versions.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Stack:
    """`reviewbus up --detach` in its own home; `reviewbus down` at the end."""

    def __init__(self, home: Path, config: Path) -> None:
        self.home = home
        self.env = {**os.environ, "REVIEWBUS_HOME": str(home), "REVIEWBUS_CONFIG": str(config),
                    "REVIEWBUS_TOPIC_PREFIX": "soak.", "HF_HUB_OFFLINE": "1"}
        self.env.pop("REVIEWBUS_KAFKA", None)
        self.settings = Settings(home=home, config=config, topic_prefix="soak.")

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=self.env,
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)

    def up(self) -> None:
        done = self.cli("up", "--detach")
        if done.returncode != 0:
            raise RuntimeError(f"reviewbus up failed: {done.stderr or done.stdout}")

    def down(self) -> None:
        self.cli("down", timeout=120)

    def worker(self) -> dict:
        return read_json(self.home / "worker.json") or {}

    def bootstrap(self) -> str:
        return str(self.worker().get("broker") or "")

    def restarts(self) -> int:
        state = read_json(self.home / "supervisor.json") or {}
        return sum(int(w.get("restarts", 0)) for w in state.get("workers", []))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.worker()['web_url']}/metrics", timeout=10) as resp:
            return resp.read().decode()

    def query(self, sql: str) -> list[dict]:
        body = json.dumps({"sql": sql}).encode()
        req = urllib.request.Request(f"{self.worker()['web_url']}/store/query", data=body,
                                     method="POST", headers=self._headers())
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return [dict(zip(answer["columns"], r)) for r in answer["rows"]]

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        token = self.home / "store.token"  # the worker-hosted store's token, where it has one
        if token.exists():
            headers["Authorization"] = f"Bearer {token.read_text().strip()}"
        return headers


def timer_totals(metrics_text: str) -> dict[str, tuple[float, float]]:
    """timer -> (sum of tick seconds, tick count) from reviewbus_timer_seconds."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        m = re.match(r'^reviewbus_timer_seconds_(sum|count)\{timer="([^"]+)"\} ([0-9.e+-]+)$',
                     line)
        if m:
            (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
    return {t: (sums.get(t, 0.0), counts.get(t, 0.0)) for t in counts}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of pid and its live descendants (the analyzers' warm
    processes run beside the worker)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo.extend(c for c, (ppid, _) in stats.items() if ppid == p)
    return total


def commit_pool(log) -> list[CommitEvent]:
    """The shared dataset's commits, or synthetic ones where it is not there."""
    from .analyzers import DATASET, synthesize

    if not DATASET.exists():
        log(f"no dataset at {DATASET}: synthetic commits")
        return [CommitEvent.model_validate_json(v) for _, _, v in load.commit_events(100, "pool")]
    with gzip.open(DATASET, "rt") as fh:
        return [synthesize(json.loads(line)) for line in fh]


class Load:
    """Commits at a constant rate; findings counted and timed as they come."""

    def __init__(self, stack: Stack, rate: float, pool: list[CommitEvent]) -> None:
        self.stack, self.rate, self.pool = stack, rate, pool
        self.sent_ms: dict[str, float] = {}
        self.served: set[str] = set()
        self.duplicates = 0
        self.latencies: list[float] = []  # since the last sample
        self.fingerprints: list[str] = []
        self.sent = 0

    async def produce(self, stop: asyncio.Event) -> None:
        settings, topic = self.stack.settings, self.stack.settings.topic_prefix + "commits"
        producer = await start_producer(settings, self.stack.bootstrap())
        run, start, i = f"soak{int(time.time())}", time.monotonic(), 0
        try:
            while not stop.is_set():
                due = start + i / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                eid = f"{run}-{i}"
                commit = self.pool[i % len(self.pool)].model_copy(update={"event_id": eid})
                self.sent_ms[eid] = time.time() * 1000
                await producer.send(topic, value=commit.model_dump_json().encode(),
                                    key=commit.repo.encode())
                self.sent, i = self.sent + 1, i + 1
        finally:
            await producer.stop()

    async def consume(self, stop: asyncio.Event) -> None:
        settings = self.stack.settings
        consumer = await start_tail_consumer(settings, self.stack.bootstrap(),
                                             settings.topic_prefix + "findings")
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                for messages in batch.values():
                    for m in messages:
                        self._seen(m)
        finally:
            await consumer.stop()

    def _seen(self, m) -> None:
        value = json.loads(m.value)
        rid = value.get("request_id")
        if rid not in self.sent_ms:
            return
        if rid in self.served:
            self.duplicates += 1
            return
        self.served.add(rid)
        self.latencies.append(m.timestamp - self.sent_ms[rid])
        for f in value.get("findings", [])[:1]:
            self.fingerprints.append(f["fingerprint"])

    async def feedback(self) -> None:
        """One false-positive verdict on a served finding (feeds the feedback filter timer)."""
        if not self.fingerprints:
            return
        fp = self.fingerprints[len(self.fingerprints) // 2]
        event = Feedback(fingerprint=fp, verdict="false_positive", actor="soak")
        producer = await start_producer(self.stack.settings, self.stack.bootstrap())
        try:
            await producer.send_and_wait(self.stack.settings.topic_prefix + "feedback",
                                         value=event.model_dump_json().encode(), key=fp.encode())
        finally:
            await producer.stop()


def sample(stack: Stack, ld: Load, minute: float, last: dict) -> dict:
    pid = int(stack.worker().get("pid", 0))
    rss, _ = rss_kib(pid) if pid else (None, None)
    broker = embedded_broker(stack.home)
    cpu = {"worker": cpu_s(pid) if pid else 0.0, "broker": cpu_s(broker.pid) if broker else 0.0}
    try:
        rows = {r["table"]: int(r["rows"]) for r in stack.query(
            "SELECT table, sum(rows) AS rows FROM system.parts WHERE active "
            "AND database = currentDatabase() GROUP BY table")}
    except (OSError, RuntimeError) as exc:
        rows = {"error": str(exc)[:200]}
    try:
        timers = timer_totals(stack.metrics())
    except OSError:
        timers = {}
    ticks = {}
    for name, (total, count) in timers.items():
        t0, c0 = last.get("timers", {}).get(name, (0.0, 0.0))
        if count > c0:
            ticks[name] = round((total - t0) / (count - c0) * 1000, 2)
    served = len(ld.served)
    span = max(1e-9, time.monotonic() - last.get("at", time.monotonic() - 1))
    new = max(1, served - last.get("served", 0))
    cpu_ms = {k: round((v - last.get("cpu", {}).get(k, 0.0)) * 1000 / new, 2)
              for k, v in cpu.items()}
    out = {
        "minute": round(minute, 2), "sent": ld.sent, "served": served,
        "served_per_s": round((served - last.get("served", 0)) / span, 3),
        "backlog": ld.sent - served, "duplicates": ld.duplicates,
        "p50_ms": percentile(ld.latencies, 0.50), "p99_ms": percentile(ld.latencies, 0.99),
        "latencies": len(ld.latencies), "rss_mib": round(rss / 1024, 1) if rss else None,
        "store_rows": rows, "timer_tick_ms": ticks, "restarts": stack.restarts(),
        "cpu_ms_per_commit": cpu_ms,
    }
    last.update(timers=timers, served=served, at=time.monotonic(), cpu=cpu)
    return out


async def drive(stack: Stack, args, log) -> tuple[list[dict], dict[int, list[float]]]:
    ld = Load(stack, args.rate, await asyncio.to_thread(commit_pool, log))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ld.consume(stop)), asyncio.create_task(ld.produce(stop))]
    samples: list[dict] = []
    latencies: dict[int, list[float]] = {}
    last: dict = {"at": time.monotonic()}
    start, total_s = time.monotonic(), args.minutes * 60
    flaky_at = total_s / 2
    flaky_done = False
    try:
        while (elapsed := time.monotonic() - start) < total_s:
            await asyncio.sleep(min(args.sample_s, total_s - elapsed))
            elapsed = time.monotonic() - start
            if not flaky_done and elapsed >= flaky_at:
                (stack.home / "flaky.fail").touch()
                flaky_done = True
                log(f"[{elapsed / 60:5.1f} min] {FLAKY} starts failing")
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()
            s = await asyncio.to_thread(sample, stack, ld, elapsed / 60, last)
            latencies[id(s)] = ld.latencies
            ld.latencies = []
            samples.append(s)
            await ld.feedback()
            log(f"[{s['minute']:5.1f} min] sent {s['sent']} served {s['served']} "
                f"({s['served_per_s']}/s) backlog {s['backlog']} p50 {s['p50_ms']} "
                f"p99 {s['p99_ms']} ms rss {s['rss_mib']} MiB restarts {s['restarts']} "
                f"cpu/commit {s['cpu_ms_per_commit']} ticks {s['timer_tick_ms']}")
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return samples, latencies


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    home = Path(tempfile.mkdtemp(prefix="reviewbus-soak-"))
    stack = Stack(home, soak_config(home, args.retest_after_s))
    log(f"soak: {args.minutes:g} min at {args.rate:g} commits/s in {home}")
    stack.up()
    try:
        samples, latencies = asyncio.run(drive(stack, args, log))
    finally:
        stack.down()
    edge = min(args.edge_min, samples[-1]["minute"] / 3) if samples else args.edge_min
    result = {"machine": machine_info(), "params": vars(args), "samples": samples,
              "summary": summary(samples, edge, latencies) if samples else {}}
    stamp = time.strftime("%Y%m%dT%H%M%S")
    name = f"soak-{stamp}" + (f"-{args.label}" if args.label else "")
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    plot(samples, out.with_suffix(".png"),
         f"soak: {args.minutes:g} min at {args.rate:g} commits/s, default versions + {FLAKY} "
         "(fails from the dotted line on)")
    log(json.dumps(result["summary"], indent=1))
    log(f"wrote {out} and {out.with_suffix('.png').name}")
    if not args.keep:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
